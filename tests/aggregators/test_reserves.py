"""Rules that exclude clients take reserves: rows come sampled first, then reserves; the rule
scores every row and averages at most keep_at_most of those it keeps, the first in row order.
The arithmetic of each hand case is in its comments."""

import math

import pytest
import torch

from fedsafe.aggregators import call_aggregator, get_aggregator
from fedsafe.aggregators.base import normalize, weighted_mean

RESERVE_RULES = ["krum", "multi-krum", "dnc", "flame", "bulyan"]
# Unit vectors within 0.1 rad of each other: one cosine cluster, and no norm above the median
# (FLAME's clip bound) by more than rounding.
HONEST = [[math.cos(t), math.sin(t)] for t in (0.0, 0.05, -0.05, 0.1, -0.1, 0.02)]


def run(name, rows, keep_at_most=None, weights=None, **params):
    updates = torch.tensor(rows, dtype=torch.float32)
    weights = torch.ones(len(rows)) if weights is None else torch.tensor(weights, dtype=torch.float32)
    return call_aggregator(get_aggregator(name, **params), updates, weights, keep_at_most=keep_at_most)


def four_sampled_two_reserves():
    """Rows 0-3 sampled, row 1 the outlier; rows 4 and 5 reserves, both honest."""
    return [HONEST[0], [-40.0, 30.0], HONEST[1], HONEST[2], HONEST[3], HONEST[4]]


@pytest.mark.parametrize("name,params", [("multi-krum", {}), ("dnc", {"sub_dim": 2}), ("flame", {})])
def test_the_first_reserve_stands_in_for_the_excluded_outlier(name, params):
    # multi-krum: m = n - f = 5 of 6 (all but the outlier); dnc: c * f = 1 removed, the outlier;
    # flame: the five honest rows are one cluster. Room for four: rows 0, 2, 3 and the first
    # reserve (4); the second reserve (5) is kept but spare: weight 0, unflagged.
    rows = four_sampled_two_reserves()
    r = run(name, rows, keep_at_most=4, **params)
    assert r.flagged.tolist() == [False, True, False, False, False, False]
    assert r.weights.tolist() == pytest.approx([0.25, 0, 0.25, 0.25, 0.25, 0])
    expected = torch.tensor([rows[i] for i in (0, 2, 3, 4)]).mean(dim=0)  # unit norms: nothing clipped
    assert torch.allclose(r.update, expected, atol=1e-6)


def test_dnc_removes_a_reserve_outlier_and_keeps_every_sampled_row():
    # Without reserves c * f = 1 of the four honest rows would go; here the reserve outlier goes.
    rows = HONEST[:4] + [[-40.0, 30.0], HONEST[4]]
    r = run("dnc", rows, keep_at_most=4, sub_dim=2)
    assert r.flagged.tolist() == [False] * 4 + [True, False]
    assert r.weights.tolist() == pytest.approx([0.25] * 4 + [0, 0])


def test_krum_chooses_among_reserves_too():
    # f = 1, n - f - 2 = 3 neighbours; squared distances along the line, 6 rows:
    # c0 (0): 4 + 9 + 16 = 29, c1 (100): huge, c2 (3): 1 + 1 + 4 = 6, c3 (5): 1 + 1 + 4 = 6,
    # c4 (4): 1 + 1 + 4 = 6... c4 is 1 from 3 and 5 and 2 from 2: 1 + 1 + 4 = 6, c5 (2): 1 + 4 + 4 = 9.
    # c2, c3, c4 tie; c4 (a reserve) has the smallest total distance to everyone.
    rows = [[0.0], [100.0], [3.0], [5.0], [4.0], [2.0]]
    r = run("krum", rows, keep_at_most=4)
    assert r.weights.tolist() == [0, 0, 0, 0, 1, 0] and r.update.tolist() == [4.0]
    assert r.flagged.tolist() == [True, True, True, True, False, True]


def test_krum_neighbourhood_averages_the_first_of_its_group():
    # f = 1, n = 6, n - f - 1 = 4 nearest (L2): c0 (0): 2 + 3 + 4 + 5 = 14, c2 (3): 1 + 1 + 2 + 3 = 7,
    # c3 (5): 1 + 2 + 3 + 5 = 11, c4 (4): 1 + 1 + 2 + 4 = 8, c5 (2): 1 + 2 + 2 + 3 = 8,
    # c1 (100): 95 + 96 + 97 + 98 = 386.
    # Best c2, group {c2, c3, c4, c5, c0}: the first four in row order are c0, c2, c3, c4.
    rows = [[0.0], [100.0], [3.0], [5.0], [4.0], [2.0]]
    r = run("krum", rows, keep_at_most=4, variant="neighbourhood")
    assert r.scores.tolist() == pytest.approx([14, 386, 7, 11, 8, 8])
    assert r.flagged.tolist() == [False, True, False, False, False, False]
    assert r.weights.tolist() == pytest.approx([0.25, 0, 0.25, 0.25, 0.25, 0]) and r.update.tolist() == [3.0]


def test_bulyan_phase_two_runs_on_the_first_selected():
    # Seven sampled (row 1 an outlier), three reserves (the last an outlier); f = 1, n = 10:
    # phase 1 selects theta = 8, the eight inliers; room for seven: rows 0, 2-6 and reserve 7
    # (values 0..6). Phase 2 trims 2f around the median 3: drop 6 (a tie goes high), then 0:
    # the mean of 1..5 is 3. Reserve 8 (3.5) is selected but spare.
    rows = [[0.0], [100.0], [1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [3.5], [-100.0]]
    r = run("bulyan", rows, keep_at_most=7)
    assert r.flagged.tolist() == [False, True] + [False] * 7 + [True]
    assert r.update.tolist() == [3.0] and r.info == {"theta": 7, "beta": 5}
    assert r.weights.tolist() == pytest.approx([0, 0, 0.2, 0.2, 0.2, 0.2, 0.2, 0, 0, 0])


def sample(n, seed):
    g = torch.Generator().manual_seed(seed)
    updates = torch.randn(n, 40, generator=g) * 0.1 + torch.linspace(-1, 1, 40)
    updates[-2:] *= 4  # two outliers for the rules to exclude
    return updates, torch.randint(1, 40, (n,), generator=g).float()


@pytest.mark.parametrize("name,params", [(r, {}) for r in RESERVE_RULES] + [("krum", {"variant": "neighbourhood"})])
def test_without_reserves_the_result_is_bit_identical(name, params):
    """keep_at_most >= n leaves nothing over: the same tensors as the rule called without it."""
    updates, weights = sample(11, seed=len(name))
    plain = get_aggregator(name, **params)(updates, weights)  # the rule itself, no keep_at_most
    for k in (11, 15):
        r = call_aggregator(get_aggregator(name, **params), updates, weights, keep_at_most=k)
        assert torch.equal(r.update, plain.update) and torch.equal(r.weights, plain.weights)
        assert torch.equal(r.flagged, plain.flagged) and torch.equal(r.scores, plain.scores)


@pytest.mark.parametrize("name", ["multi-krum", "dnc"])
def test_without_reserves_the_average_is_the_plain_one_over_the_kept(name):
    """The formula these rules used before reserves: the examples-weighted mean of the unflagged."""
    updates, weights = sample(9, seed=3)
    r = call_aggregator(get_aggregator(name), updates, weights)
    assert torch.equal(r.update, weighted_mean(updates, normalize(weights * ~r.flagged)))


@pytest.mark.parametrize("name", RESERVE_RULES)
def test_rules_that_exclude_take_reserves(name):
    assert getattr(get_aggregator(name), "takes_reserves", False)
