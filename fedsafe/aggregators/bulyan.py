"""Bulyan (El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in Byzantium",
ICML 2018).

Phase 1: apply Krum recursively, theta = n - 2f times, each time moving the winner from the
remaining set to the selection (Krum scores recomputed on what remains; one Gram matrix for all).
Phase 2, per coordinate: the beta = theta - 2f selected values closest to their median, averaged
(unweighted, as the paper and Flower's Bulyan); chunked over d, chunks sorted in parallel.
Needs n >= 4f + 3.
Flower's Bulyan selects with one-shot Multi-Krum by default; given a recursive-Krum selection
rule it gives the same result (tests/aggregators/test_flower_reference.py).
With reserves (`takes_reserves`), phase 1 runs on all rows and phase 2 on the first keep_at_most
selected (theta' of them, in row order), still trimming 2f per coordinate (beta = theta' - 2f);
the other selected rows get weight 0, unflagged. Without reserves theta' = theta.
Attribution: share of coordinates where a client's value was among the beta averaged. Clients
left out by phase 1 are flagged; `scores` are the phase-1 Krum scores on all n clients.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, Degenerate, check_int, keep_mask, pairwise_sq_dists
from fedsafe.aggregators.chunks import column_chunks, count_within, map_chunks, sort_last
from fedsafe.aggregators.krum import krum_ranking, krum_scores
from fedsafe.aggregators.registry import register


@register("bulyan")
class Bulyan:
    takes_reserves = True

    def __init__(self, num_malicious: int = 1):
        self.num_malicious = check_int("num_malicious", num_malicious)
        self.min_clients = 4 * self.num_malicious + 3

    def degenerate(self, n: int) -> Degenerate | None:
        if self.num_malicious > 0:
            return None
        return Degenerate("num_malicious", 0, f"selects and averages all {n} updates (theta = beta = n): the plain "
                                              f"average; the smallest that trims is 1 (it needs 7 updates a round)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *,
                 keep_at_most: int | None = None) -> AggregationResult:
        n, d = updates.shape
        f = self.num_malicious
        if n < self.min_clients:
            raise ValueError(f"bulyan with num_malicious={f} needs n >= 4f + 3 = {self.min_clients} "
                             f"clients, got {n}")
        dist = pairwise_sq_dists(updates)  # (n, n)
        remaining = list(range(n))
        chosen: list[int] = []
        for _ in range(n - 2 * f):
            sub = dist[remaining][:, remaining]
            best = int(krum_ranking(sub, f)[0][0])
            chosen.append(remaining.pop(best))
        selected = torch.zeros(n, dtype=torch.bool)
        selected[chosen] = True
        used_rows = keep_mask(~selected, keep_at_most)  # (n,) phase 2's rows
        index = used_rows.nonzero().flatten()  # (theta,) ascending
        left_out = (~used_rows).nonzero().flatten()
        theta = len(index)
        beta = theta - 2 * f
        if beta < 1:
            raise ValueError(f"bulyan with num_malicious={f} averages {theta} rows (keep_at_most={keep_at_most}), "
                             f"needs more than 2f = {2 * f}")
        out = torch.empty(d, dtype=updates.dtype)

        def chunk(cols: slice) -> torch.Tensor:
            rows = updates[:, cols].T.clone(memory_format=torch.contiguous_format)  # (C, n), a copy even at d = 1
            rows[:, left_out] = float("inf")  # left-out clients sort last: first theta are ours
            left, right, mean = _closest_window(sort_last(rows), theta, beta)
            out[cols] = mean
            return count_within(updates[:, cols], left, right)[index]  # (theta,)

        used = map_chunks(chunk, column_chunks(n, d), theta)  # (theta,) coordinates used
        share = torch.zeros(n, dtype=torch.float64)
        share[index] = used / used.sum()
        return AggregationResult(update=out, weights=share, flagged=~selected,
                                 scores=krum_scores(dist, f), info={"theta": theta, "beta": beta})


def _closest_window(s: torch.Tensor, theta: int, beta: int):
    """s (C, n) sorted rows whose first theta entries are the selected values -> (left, right,
    mean) of the beta values closest to their median, each (C,).

    Those values form a contiguous run of each sorted row: drop the farther end theta - beta
    times (on a tie the upper end goes).
    """
    rows, n = s.shape
    flat = s.reshape(-1)  # index_select on flat positions: far faster than gather on short rows
    med = (s[:, (theta - 1) // 2] + s[:, theta // 2]) / 2  # (C,)
    lo = torch.arange(rows) * n  # flat position of each row's current low end
    hi = lo + theta - 1
    total = s[:, :theta].sum(dim=1)
    for _ in range(theta - beta):
        low_val, high_val = flat.index_select(0, lo), flat.index_select(0, hi)
        drop_high = high_val - med >= med - low_val
        total -= torch.where(drop_high, high_val, low_val)
        hi -= drop_high.long()
        lo += (~drop_high).long()
    return flat.index_select(0, lo), flat.index_select(0, hi), total / beta
