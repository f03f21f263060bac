"""Coordinate-wise trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018).

For every coordinate drop the k largest and k smallest client values and average the rest,
unweighted. By default k = `trim` = 1 whatever the round's size, as the paper's code
(FedLLM-Attack federated_learning/fed_global.py, `trimmed_num = 1`). `beta` > 0 trims a share
instead, k = int(beta * n), the meaning of Flower's FedTrimmedAvg `beta` (scipy's trim_mean
`proportiontocut`): beta=0.1 with 20 clients drops 2 + 2, with 4 clients none (`degenerate`).
Chunked over d, chunks sorted in parallel.
Attribution: share of coordinates where a client's value was kept (a value tied with a cut value
counts as kept); `scores` is the fraction of coordinates where it was trimmed. Nobody is flagged.
"""

from __future__ import annotations

import math

import torch

from fedsafe.aggregators.base import AggregationResult, Degenerate, check_int, no_flags
from fedsafe.aggregators.chunks import column_chunks, count_within, map_chunks, sort_columns
from fedsafe.aggregators.registry import register


@register("trimmed-mean")
class TrimmedMean:
    def __init__(self, trim: int = 1, beta: float = 0.0):
        self.trim = check_int("trim", trim)
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"trimmed-mean beta must be in [0, 0.5), got {beta!r}")
        if beta > 0 and trim != 1:
            raise ValueError(f"trimmed-mean takes trim={trim!r} or beta={beta!r}, not both: beta > 0 replaces "
                             f"trim (leave trim at 1), beta = 0 trims the count trim")
        self.beta = beta
        self.min_clients = 1 if beta > 0 else 2 * self.trim + 1  # a share never trims everything

    def per_side(self, n: int) -> int:
        return int(self.beta * n) if self.beta > 0 else self.trim

    def degenerate(self, n: int) -> Degenerate | None:
        if self.per_side(n) > 0:
            return None
        if self.beta == 0:
            return Degenerate("trim", self.trim, f"trims 0 of {n} updates per side; the smallest that trims one is 1")
        if n < 3:
            return Degenerate(None, n, f"no beta < 0.5 trims any of {n} updates; trimming one per side needs 3")
        smallest = 1 / n
        while int(smallest * n) < 1:  # 1/n * n can round below 1
            smallest = math.nextafter(smallest, 1.0)
        return Degenerate("beta", self.beta, f"trims 0 of {n} updates per side; the smallest that trims one is "
                                             f"{smallest!r} (or beta=0 and trim=1)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        n, d = updates.shape
        k = self.per_side(n)
        if n - 2 * k < 1:
            raise ValueError(f"trimmed-mean with trim={k} needs n >= {2 * k + 1} updates, got {n}")
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
