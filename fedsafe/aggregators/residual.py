"""Residual-based reweighting (Fu, Xie, Li, Chen, "Attack-Resistant Federated Learning with
Residual-based Reweighting", arXiv:1912.11464, 2019).

Per coordinate, sort the n client values y and regress them on their ranks x = 1..n with
Siegel's repeated median: slope b1 = med_i med_{j!=i} (y_j - y_i) / (x_j - x_i), intercept
b0 = med_i med_{j!=i} (x_j y_i - x_i y_j) / (x_j - x_i) = med_i (y_i - x_i * inner_slope_i)
(x_i > 0, so the inner median maps through). Residuals r are standardized by
tau = 1.4826 * (1 + 5 / (n - 1)) * med|r| and the leverage sqrt(1 - h_i) of rank x_i; the IRLS
(Huber) weight is min(1, Z / |e_i|) with Z = lam * sqrt(2 / n); weights below `threshold` are
zeroed and the coordinate is the weighted mean of its values. Unweighted by example counts.
Cost is O(n^2) per coordinate (all pairwise slopes), chunked so (C, n, n) stays ~16 MB.
Attribution: each coordinate splits its unit share by the normalized weights; `scores` are the
clients' mean IRLS weights. Nobody is flagged. Needs n >= 3.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, no_flags
from fedsafe.aggregators.chunks import CHUNK_ELEMS, column_chunks, map_chunks, sort_columns, sort_last
from fedsafe.aggregators.registry import register


@register("residual")
class ResidualReweighting:
    min_clients = 3

    def __init__(self, lam: float = 2.0, threshold: float = 0.05):
        if not lam > 0:
            raise ValueError(f"residual lam must be > 0, got {lam!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"residual threshold must be in [0, 1), got {threshold!r}")
        self.lam, self.threshold = float(lam), float(threshold)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        n, d = updates.shape
        if n < self.min_clients:
            raise ValueError(f"residual needs at least {self.min_clients} clients, got {n}")
        fit = _RankRegression(n, updates.dtype, self.lam * (2 / n) ** 0.5)
        out = torch.empty(d, dtype=updates.dtype)

        def chunk(cols: slice):
            values, order = sort_columns(updates[:, cols], order=True)  # (C, n): sorted, client per rank
            w = fit.weights(values)
            w.masked_fill_(w < self.threshold, 0.0)  # (C, n)
            total = w.sum(dim=1, keepdim=True)  # (C, 1) > 0: about half the values have |e| < 0.7
            out[cols] = (w * values).sum(dim=1) / total[:, 0]
            per_client = torch.zeros(2, n, dtype=torch.float64)  # [share, sum of weights]
            per_client[0].index_add_(0, order.reshape(-1), (w / total).reshape(-1).double())
            per_client[1].index_add_(0, order.reshape(-1), w.reshape(-1).double())
            return per_client.reshape(-1)

        totals = map_chunks(chunk, column_chunks(n * n, d, CHUNK_ELEMS), 2 * n)
        share, weight_sum = totals[:n], totals[n:]
        return AggregationResult(update=out, weights=share / share.sum(), flagged=no_flags(n),
                                 scores=weight_sum / d)


class _RankRegression:
    """Repeated-median line through sorted values vs ranks, and the resulting IRLS weights."""

    def __init__(self, n: int, dtype: torch.dtype, z: float):
        self.n = n
        self.x = torch.arange(1, n + 1, dtype=dtype)  # (n,) ranks
        dx = self.x[None, :] - self.x[:, None]  # (n, n) [i, j] = x_j - x_i
        self.inv_dx = torch.where(dx == 0, torch.zeros_like(dx), 1 / dx)
        # +inf on the diagonal sorts last, so the n - 1 real slopes keep their positions
        self.diag = torch.diag(torch.full((n,), float("inf"), dtype=dtype))
        centered = self.x - self.x.mean()
        leverage = 1 / n + centered**2 / (centered**2).sum()  # hat-matrix diagonal of [1, x]
        self.root = (1 - leverage).sqrt()  # (n,)
        self.tau_scale = 1.4826 * (1 + 5 / (n - 1))
        self.z = z

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        """y (C, n) sorted ascending -> Huber IRLS weights (C, n) in [0, 1]."""
        n = self.n
        slopes = (y[:, None, :] - y[:, :, None]).mul_(self.inv_dx).add_(self.diag)  # (C, n, n)
        slopes = sort_last(slopes)
        inner = (slopes[..., (n - 2) // 2] + slopes[..., (n - 1) // 2]) / 2  # (C, n) median of n-1
        del slopes
        b1 = _median_rows(inner)  # (C,)
        b0 = _median_rows(y - self.x * inner)  # (C,)
        resid = y - (b0[:, None] + b1[:, None] * self.x)  # (C, n)
        tau = self.tau_scale * _median_rows(resid.abs())  # (C,)
        e = resid / (tau[:, None] * self.root).clamp_min(torch.finfo(y.dtype).tiny)
        return (self.z / e.abs()).clamp_(max=1.0)  # |e| = 0 -> inf -> 1


def _median_rows(t: torch.Tensor) -> torch.Tensor:
    """Median of each row of a (C, n) tensor, numpy semantics."""
    s = sort_last(t.contiguous().clone())
    n = t.shape[1]
    return (s[:, (n - 1) // 2] + s[:, n // 2]) / 2
