"""Divide-and-Conquer (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2).

Each of `niters` times: draw `sub_dim` random coordinates, center the (n, sub_dim) submatrix,
take its top right singular vector v and score every client by its squared projection on v;
the c * f highest-scored are outliers. Clients never an outlier in any iteration are averaged
(examples-weighted). The coordinate draws are seeded by (seed, call number): reproducible, and a
resumed run continues the sequence (state_dict). Outliers are flagged; `scores` are the outlier
scores averaged over iterations. With reserves (`takes_reserves`) all rows are scored and at most
keep_at_most of the others, the first in row order, are averaged; the rest get weight 0, unflagged.
"""

from __future__ import annotations

import math

import torch

from fedsafe.aggregators.base import AggregationResult, Degenerate, check_int, keep_mask, normalize, weighted_mean
from fedsafe.aggregators.registry import register


@register("dnc")
class DnC:
    takes_reserves = True

    def __init__(self, num_malicious: int = 1, c: float = 1.0, sub_dim: int = 10000,
                 niters: int = 1, seed: int = 0):
        self.num_malicious = check_int("num_malicious", num_malicious)
        if not c >= 0:
            raise ValueError(f"dnc c must be >= 0, got {c!r}")
        self.c = float(c)
        self.sub_dim = check_int("sub_dim", sub_dim, 1)
        self.niters = check_int("niters", niters, 1)
        self.seed = check_int("seed", seed)
        self.calls = 0

    def degenerate(self, n: int) -> Degenerate | None:
        f, c = self.num_malicious, self.c
        removed = int(c * f)
        if 0 < removed < n:
            return None
        what = f"removes int(c * num-malicious) = {removed} of {n} updates"
        if removed >= n:
            if int(c) < n:  # num-malicious = 1 keeps one
                largest = next(g for g in range(f, 0, -1) if int(c * g) < n)
                return Degenerate("num_malicious", f, f"{what}, all of them; the largest that keeps one is {largest}")
            return Degenerate("c", c, f"{what}, all of them; c below {n / f!r} keeps one")
        if f == 0:
            if c == 0:
                return Degenerate("num_malicious", f, f"{what}: the plain average; num-malicious >= 1 with c > 0 "
                                                      f"removes some")
            smallest = max(1, math.floor(1 / c))
            while int(c * smallest) < 1:
                smallest += 1
            return Degenerate("num_malicious", f, f"{what}: the plain average; the smallest that removes one is "
                                                  f"{smallest}")
        smallest_c = 1 / f
        while int(smallest_c * f) < 1:  # 1/f * f can round below 1
            smallest_c = math.nextafter(smallest_c, math.inf)
        return Degenerate("c", c, f"{what}: the plain average; the smallest that removes one is {smallest_c!r}")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *,
                 keep_at_most: int | None = None) -> AggregationResult:
        n, d = updates.shape
        removed = int(self.c * self.num_malicious)
        if removed >= n:
            raise ValueError(f"dnc would remove c * num_malicious = {removed} of {n} clients")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        good = torch.ones(n, dtype=torch.bool)
        scores = torch.zeros(n, dtype=torch.float64)
        for _ in range(self.niters):
            sub = updates[:, _coordinates(d, self.sub_dim, gen)].to(torch.float64)  # (n, b)
            centered = sub - sub.mean(dim=0)
            # <x_i, v>^2 for the top right singular vector v equals lambda * u_i^2 for the top
            # eigenpair (lambda, u) of the (n, n) Gram matrix: no (b,) vector needed.
            eigenvalues, eigenvectors = torch.linalg.eigh(centered @ centered.T)
            s = eigenvalues[-1].clamp_min(0) * eigenvectors[:, -1] ** 2  # (n,)
            scores += s / self.niters
            if removed:
                good[s.topk(removed).indices] = False
        p = normalize(weights * keep_mask(~good, keep_at_most))
        return AggregationResult(update=weighted_mean(updates, p), weights=p, flagged=~good,
                                 scores=scores, info={"removed_per_iter": removed})

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])


def _coordinates(d: int, b: int, gen: torch.Generator) -> torch.Tensor:
    """b distinct coordinates of d, sorted (all of them if b >= d), without a d-sized permutation."""
    if b >= d:
        return torch.arange(d)
    if 4 * b > d:
        return torch.randperm(d, generator=gen)[:b].sort().values
    picked = torch.randint(d, (2 * b,), generator=gen).unique()  # sorted, distinct
    while picked.numel() < b:  # practically never: 2b draws from d >= 4b
        picked = torch.cat([picked, torch.randint(d, (b,), generator=gen)]).unique()
    keep = torch.randperm(picked.numel(), generator=gen)[:b]  # a uniform subset of the distinct draws
    return picked[keep].sort().values
