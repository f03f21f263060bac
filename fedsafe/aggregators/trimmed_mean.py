"""Coordinate-wise trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018).

For every coordinate drop the k = int(beta * n) largest and k smallest client values and average
the rest, unweighted. `beta` is the share trimmed per side, the same meaning as Flower's
FedTrimmedAvg `beta` (scipy's trim_mean `proportiontocut`): beta=0.1 with 20 clients drops 2 + 2.
Chunked over d, chunks sorted in parallel.
Attribution: share of coordinates where a client's value was kept (a value tied with a cut value
counts as kept); `scores` is the fraction of coordinates where it was trimmed. Nobody is flagged.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, no_flags
from fedsafe.aggregators.chunks import column_chunks, count_within, map_chunks, sort_columns
from fedsafe.aggregators.registry import register


@register("trimmed-mean")
class TrimmedMean:
    def __init__(self, beta: float = 0.1):
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"trimmed-mean beta must be in [0, 0.5), got {beta!r}")
        self.beta = beta

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        n, d = updates.shape
        k = int(self.beta * n)
        out = torch.empty(d, dtype=updates.dtype)

        def chunk(cols: slice) -> torch.Tensor:
            c = updates[:, cols]  # (n, C)
            if k == 0:
                out[cols] = c.mean(dim=0)
                return torch.full((n,), float(c.shape[1]), dtype=torch.float64)
            s = sort_columns(c)  # (C, n)
            out[cols] = s[:, k:n - k].mean(dim=1)
            return count_within(c, s[:, k].contiguous(), s[:, n - k - 1].contiguous())  # (n,)

        kept = map_chunks(chunk, column_chunks(n, d), n)  # (n,) coordinates kept
        trimmed = d - kept
        return AggregationResult(update=out, weights=kept / kept.sum(), flagged=no_flags(n),
                                 scores=trimmed / d, info={"trimmed_per_side": k})
