"""The Aggregator contract, checked on every registered rule (via available())."""

import json

import pytest
import torch

from fedsafe.aggregators import available, call_aggregator, get_aggregator
from tests.test_safety_probe import stand_in_scores

D = 48  # small d keeps the suite fast; the rules are chunked and shape-agnostic


def norm_probe(updates):
    """A stand-in behaviour probe for rules that need one: a pure function of each row, so the
    contract (order, identical inputs) can be checked without a model; scores are >= 0."""
    return stand_in_scores(updates.norm(dim=1))  # (n, 3)


def run(name, updates, weights, ids=None, agg=None):
    agg = agg or get_aggregator(name)
    ids = list(range(100, 100 + len(weights))) if ids is None else ids
    malicious = [i % 3 == 0 for i in ids]  # a ground truth for reference rules, tied to each client
    return call_aggregator(agg, updates, weights, client_ids=ids, probe=norm_probe, malicious=malicious)


def sample(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, D, generator=g) * 0.1 + torch.linspace(-1, 1, D)  # a shared direction + spread
    weights = torch.randint(5, 50, (n,), generator=g).float()
    return updates, weights


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("n", [7, 12, 20])
def test_shapes_weights_and_info(name, n):
    updates, weights = sample(n, seed=n)
    before = updates.clone()
    result = run(name, updates, weights)
    assert result.update.shape == (D,) and result.update.dtype == torch.float32
    assert torch.isfinite(result.update).all()
    assert result.weights.shape == (n,) and (result.weights >= 0).all()
    assert float(result.weights.sum()) == pytest.approx(1.0, abs=1e-9)
    assert result.flagged.shape == (n,) and result.flagged.dtype == torch.bool
    assert result.scores is None or result.scores.shape == (n,)
    json.dumps(result.info)  # small and serializable, it goes into results.json
    assert torch.equal(updates, before), "aggregators must not modify their input"


@pytest.mark.parametrize("name", available())
def test_a_single_coordinate_is_not_sorted_in_place(name):
    """At d = 1 a transposed chunk is already contiguous: a rule must still sort its own copy."""
    updates = torch.tensor([[3.0], [-1.0], [7.0], [0.5], [2.0], [-4.0], [1.0]])
    before = updates.clone()
    run(name, updates, torch.ones(7))
    assert torch.equal(updates, before), "aggregators must not modify their input"


@pytest.mark.parametrize("name", available())
def test_identical_inputs_give_that_input(name):
    updates, weights = sample(9, seed=1)
    updates[:] = updates[0]
    result = run(name, updates, weights)
    assert torch.allclose(result.update, updates[0], atol=1e-5)


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("n", [7, 16])
def test_client_order_does_not_matter(name, n):
    updates, weights = sample(n, seed=2 * n)
    ids = list(range(100, 100 + n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    a = run(name, updates, weights, ids)
    b = run(name, updates[perm], weights[perm], [ids[i] for i in perm])
    assert torch.allclose(a.update, b.update, atol=1e-5)
    assert torch.allclose(a.weights[perm], b.weights, atol=1e-6)
    assert torch.equal(a.flagged[perm], b.flagged)


@pytest.mark.parametrize("name", available())
def test_examples_are_a_positive_scale_free_weight(name):
    """Multiplying every example count by the same factor changes nothing."""
    updates, weights = sample(10, seed=3)
    a = run(name, updates, weights)
    b = run(name, updates, weights * 7)
    assert torch.allclose(a.update, b.update, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in available() if hasattr(get_aggregator(n), "state_dict")])
def test_state_survives_a_checkpoint(name):
    first, second = sample(8, seed=4), sample(8, seed=5)
    original = get_aggregator(name)
    run(name, *first, agg=original)
    restored = get_aggregator(name)
    restored.load_state_dict(original.state_dict())
    a = run(name, *second, agg=original)
    b = run(name, *second, agg=restored)
    assert torch.allclose(a.update, b.update) and torch.equal(a.flagged, b.flagged)
