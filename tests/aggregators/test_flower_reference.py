"""Flower's own strategies as the reference for the rules it ships.

Each Flower strategy aggregates reply Messages (one ArrayRecord + a MetricRecord with
num-examples each) through its real `aggregate_train`; our rule gets the same arrays flattened
to (n, d). Flower aggregates full arrays, fedsafe deltas; the rules are translation-equivariant,
so comparing on the same arrays is the same test. Parameter mapping:
- FedTrimmedAvg(beta) == trimmed-mean(beta): both cut int(beta * n) values per side (scipy's
  trim_mean), unweighted; our beta = 0 means "trim a count" (`trim`), so Flower's beta = 0 is our
  trim = 0;
- Krum/MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m) == krum/multi-krum(num_malicious=f,
  num_selected=m): score = n - f - 2 (at least 1) nearest neighbours; Multi-Krum averages the
  selection weighted by num-examples, as ours;
- Bulyan(num_malicious_nodes=f): Flower's default selection is one-shot Multi-Krum of theta; ours
  is the paper's recursive Krum. Given a recursive-Krum selection rule (built from Flower's own
  select_multikrum) they agree; with the default they agree whenever both select the same set.
  Below 4f + 3 replies Flower skips the round (returns None), ours raises ValueError.
"""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, Metadata, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedsafe.aggregators import call_aggregator, get_aggregator

SHAPES = {"layer.lora_A": (3, 5), "layer.lora_B": (4, 3), "head.lora_A": (7,)}  # d = 34
D = sum(int(np.prod(s)) for s in SHAPES.values())


def sample(n, seed):
    g = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, D, generator=g)
    weights = torch.randint(1, 100, (n,), generator=g).float()
    return updates, weights


def replies(updates, weights):
    """One Flower reply Message per row, its arrays split by SHAPES."""
    out = []
    for node, (row, w) in enumerate(zip(updates.numpy(), weights.tolist()), start=1):
        arrays, start = ArrayRecord(), 0
        for key, shape in SHAPES.items():
            size = int(np.prod(shape))
            arrays[key] = Array(row[start:start + size].reshape(shape).copy())
            start += size
        metadata = Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0,
                            reply_to_message_id="", group_id="1", created_at=0.0, ttl=3600.0,
                            message_type=MessageType.TRAIN)
        content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": int(w)})})
        out.append(Message(content, metadata=metadata))
    return out


def flower(strategy, updates, weights):
    arrays, _ = strategy.aggregate_train(1, replies(updates, weights))
    return torch.from_numpy(np.concatenate([arrays[k].numpy().ravel() for k in SHAPES]))


def ours(name, updates, weights, **params):
    return call_aggregator(get_aggregator(name, **params), updates, weights).update


def assert_same(a, b):
    assert torch.allclose(a.double(), b.double(), atol=1e-5), (a - b).abs().max()


def test_fedavg():
    updates, weights = sample(6, 0)
    assert_same(ours("fedavg", updates, weights), flower(FedAvg(), updates, weights))


@pytest.mark.parametrize("n", [3, 5, 6, 20])
def test_median(n):
    updates, weights = sample(n, n)
    assert_same(ours("median", updates, weights), flower(FedMedian(), updates, weights))


@pytest.mark.parametrize("n", [5, 7, 10, 20])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.3, 0.45])
def test_trimmed_mean(n, beta):
    updates, weights = sample(n, 100 + n)
    params = {"beta": beta} if beta > 0 else {"trim": 0}
    assert_same(ours("trimmed-mean", updates, weights, **params),
                flower(FedTrimmedAvg(beta=beta), updates, weights))


@pytest.mark.parametrize("n, f", [(5, 1), (10, 1), (10, 3), (20, 4)])
def test_krum(n, f):
    updates, weights = sample(n, 200 + n + f)
    assert_same(ours("krum", updates, weights, num_malicious=f),
                flower(Krum(num_malicious_nodes=f), updates, weights))


@pytest.mark.parametrize("n, f, m", [(6, 1, 4), (10, 2, 5), (10, 2, 8), (20, 4, 16)])
def test_multi_krum(n, f, m):
    updates, weights = sample(n, 300 + n + m)
    assert_same(ours("multi-krum", updates, weights, num_malicious=f, num_selected=m),
                flower(MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m), updates, weights))


def recursive_krum(contents, num_malicious, theta):
    """The paper's selection, from Flower's Krum: pick one, remove it, repeat theta times."""
    remaining, chosen = list(contents), []
    for _ in range(theta):
        best = select_multikrum(remaining, num_malicious, 1)[0]
        chosen.append(best)
        remaining = [c for c in remaining if c is not best]
    return chosen


# f >= 3: no one-neighbour ties
@pytest.mark.parametrize("n, f", [(15, 3), (19, 4), pytest.param(20, 3, marks=pytest.mark.slow)])
def test_bulyan_with_recursive_krum_selection(n, f):
    updates, weights = sample(n, 400 + n + f)
    assert_same(ours("bulyan", updates, weights, num_malicious=f),
                flower(Bulyan(num_malicious_nodes=f, selection_rule=recursive_krum), updates, weights))


@pytest.mark.parametrize("n, f", [(15, 3), (20, 4)])
@pytest.mark.slow
def test_bulyan_default_flower_when_the_selections_agree(n, f):
    updates, weights = sample(n, 500 + n)
    # 2f far outliers in orthogonal directions: one-shot Multi-Krum and recursive Krum both
    # select exactly the n - 2f others, so Flower's default Bulyan must give our result.
    updates[n - 2 * f:] = 1000 * torch.eye(D)[: 2 * f]
    assert_same(ours("bulyan", updates, weights, num_malicious=f),
                flower(Bulyan(num_malicious_nodes=f), updates, weights))
