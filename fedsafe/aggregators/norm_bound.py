"""Norm bounding (Sun et al., "Can You Really Backdoor Federated Learning?", 2019).

Scale every client delta down to at most `max_norm` in L2, then take the examples-weighted mean.
max_norm = 0 (default) uses the median of this round's client norms, so the bound adapts to the
update scale without tuning. Clipped clients are flagged; `scores` are the clip factors
(1 = untouched); `weights` are the examples-weighted mixing coefficients.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, median, normalize
from fedsafe.aggregators.chunks import column_chunks
from fedsafe.aggregators.registry import register


@register("norm-bound")
class NormBound:
    def __init__(self, max_norm: float = 0.0):
        if not max_norm >= 0:
            raise ValueError(f"norm-bound max_norm must be >= 0 (0 = median norm), got {max_norm!r}")
        self.max_norm = float(max_norm)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        norms = row_norms(updates)  # (n,) float64
        bound = self.max_norm or float(median(norms, dim=0))
        factors = clip_factors(norms, bound)  # (n,)
        p = normalize(weights)
        update = (p * factors).to(updates.dtype) @ updates  # (d,)
        return AggregationResult(update=update, weights=p, flagged=factors < 1, scores=factors,
                                 info={"max_norm": bound})


def row_norms(updates: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row (n,) in float64, chunked over d."""
    sq = torch.zeros(updates.shape[0], dtype=torch.float64)
    for cols in column_chunks(*updates.shape):
        sq += torch.linalg.vector_norm(updates[:, cols], dim=1).to(torch.float64) ** 2
    return sq.sqrt()


def clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """min(1, bound / norm) per client; a zero-norm update is left alone."""
    return torch.where(norms > bound, bound / norms.clamp_min(1e-30), torch.ones_like(norms))
