"""Aggregators defined outside fedsafe, reached by dotted path in test_registry.py."""

import torch

from fedsafe.aggregators import AggregationResult


def clipped_mean(updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
    """An already-built aggregator: rows clipped to norm 1, then the unweighted mean."""
    n = updates.shape[0]
    scale = (1 / updates.norm(dim=1).clamp_min(1e-12)).clamp(max=1)  # (n,)
    return AggregationResult(update=(scale[:, None] * updates).mean(dim=0),
                             weights=torch.full((n,), 1 / n, dtype=torch.float64),
                             flagged=scale < 1)


class ClippedMean:
    """A class with one hyperparameter, built by the registry with **params."""

    def __init__(self, max_norm: float = 1.0):
        self.max_norm = max_norm

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        n = updates.shape[0]
        scale = (self.max_norm / updates.norm(dim=1).clamp_min(1e-12)).clamp(max=1)
        return AggregationResult(update=(scale[:, None] * updates).mean(dim=0),
                                 weights=torch.full((n,), 1 / n, dtype=torch.float64),
                                 flagged=scale < 1)


class NeedsEverything:
    """Records what call_aggregator passed it."""

    needs_client_ids = True
    needs_probe = True

    def __init__(self):
        self.seen = {}

    def __call__(self, updates, weights, client_ids=None, probe=None):
        self.seen = {"client_ids": client_ids, "probe": probe}
        n = updates.shape[0]
        return AggregationResult(update=updates.mean(dim=0), weights=torch.full((n,), 1 / n, dtype=torch.float64),
                                 flagged=torch.zeros(n, dtype=torch.bool))


def returns_tensor(updates, weights):
    """Breaks the contract: a bare tensor instead of an AggregationResult."""
    return updates.mean(dim=0)
