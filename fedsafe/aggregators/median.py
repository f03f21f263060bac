"""Coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018).

Unweighted, with numpy semantics (mean of the two middle values for an even number of clients),
so it equals Flower's FedMedian (np.median). Chunked over d, chunks sorted in parallel.
Attribution: the share of coordinates where a client's value was used (is a middle value, ties
included), normalized. `scores` is each client's L2 distance to the median vector, an outlier
signal; nobody is flagged.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, Degenerate, no_flags
from fedsafe.aggregators.chunks import column_chunks, count_within, map_chunks, sort_columns
from fedsafe.aggregators.registry import register


@register("median")
class Median:
    def degenerate(self, n: int) -> Degenerate | None:
        if n >= 3:
            return None
        return Degenerate(None, n, f"the median of {n} updates is their mean; it needs 3")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        n, d = updates.shape
        out = torch.empty(d, dtype=updates.dtype)

        def chunk(cols: slice) -> torch.Tensor:
            c = updates[:, cols]  # (n, C)
            s = sort_columns(c)  # (C, n)
            lo, hi = s[:, (n - 1) // 2], s[:, n // 2]  # (C,) equal for odd n
            out[cols] = (lo + hi) / 2
            return count_within(c, lo.contiguous(), hi.contiguous())  # (n,) nothing lies strictly between

        used = map_chunks(chunk, column_chunks(n, d), n)  # (n,) coordinates used
        return AggregationResult(update=out, weights=used / used.sum(), flagged=no_flags(n),
                                 scores=distances_to(updates, out))


def distances_to(updates: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """L2 distance (n,) of each row to `center` (d,): |x|^2 - 2 x.c + |c|^2, two BLAS passes."""
    sq = torch.linalg.vector_norm(updates, dim=1).to(torch.float64) ** 2
    dots = (updates @ center).to(torch.float64)
    return (sq - 2 * dots + float(center.double().square().sum())).clamp_min(0).sqrt()
