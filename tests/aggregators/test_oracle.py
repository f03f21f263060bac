"""`oracle`: excludes exactly the rows the run marks malicious, averages the rest as FedAvg."""

import pytest
import torch

from fedsafe.aggregators import call_aggregator, get_aggregator


def test_averages_the_honest_rows_by_weight():
    updates = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-50.0, 9.0]])
    result = call_aggregator(get_aggregator("oracle"), updates, torch.tensor([1.0, 3.0, 4.0]),
                             malicious=[False, False, True])
    assert result.update.tolist() == pytest.approx([2.5, 1.5])  # (1 * [1, 0] + 3 * [3, 2]) / 4
    assert result.weights.tolist() == pytest.approx([0.25, 0.75, 0.0])
    assert result.flagged.tolist() == [False, False, True]


def test_the_first_honest_reserves_stand_in_for_the_attackers():
    """Rows: three sampled (the second an attacker), then two reserves; room for three."""
    result = call_aggregator(get_aggregator("oracle"), torch.eye(5), torch.ones(5),
                             malicious=[False, True, False, False, False], keep_at_most=3)
    assert result.weights.tolist() == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0])
    assert result.flagged.tolist() == [False, True, False, False, False]  # the spare reserve is not flagged


def test_a_round_of_attackers_only_keeps_the_global_adapter():
    result = call_aggregator(get_aggregator("oracle"), torch.randn(2, 4), torch.ones(2), malicious=[True, True])
    assert not result.update.any() and not result.weights.any() and result.flagged.all()


def test_without_the_ground_truth_it_fails_loudly():
    with pytest.raises(ValueError, match="oracle needs malicious, one bool per update row \\(3\\)"):
        call_aggregator(get_aggregator("oracle"), torch.randn(3, 4), torch.ones(3))
