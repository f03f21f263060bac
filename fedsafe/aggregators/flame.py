"""FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security 2022).

1. Cluster: HDBSCAN on pairwise cosine distances (min_cluster_size n//2 + 1, min_samples 1,
   single cluster allowed); the largest cluster is kept, every other client (other clusters and
   noise) is flagged. If HDBSCAN finds no cluster at all, everyone is kept (info["fallback"]).
2. Clip: kept updates are scaled to at most the median L2 norm of all n updates.
3. Aggregate: examples-weighted mean of the clipped kept updates (the paper: plain mean).
4. Noise (off by default): noise_lambda > 0 adds N(0, (noise_lambda * median_norm)^2) per
   coordinate, seeded by (seed, call number).
The paper clusters local models; fedsafe clusters deltas (what aggregators see; cosine of
deltas is the more common reimplementation). `scores`: each client's median cosine distance to
the others; `weights`: mixing coefficients; info["clip_factors"]: per-client scale factors.
With reserves (`takes_reserves`) all rows are clustered (the clip bound is their median norm)
and at most keep_at_most of the kept, the first in row order, are averaged; the rest of the
cluster gets weight 0, unflagged.
sklearn is imported on first use, so importing fedsafe.aggregators stays light.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import (AggregationResult, Degenerate, check_int, cosine_from_gram, gram, keep_mask,
                                      median, normalize)
from fedsafe.aggregators.norm_bound import clip_factors
from fedsafe.aggregators.registry import register


@register("flame")
class Flame:
    takes_reserves = True

    def __init__(self, noise_lambda: float = 0.0, seed: int = 0):
        if not noise_lambda >= 0:
            raise ValueError(f"flame noise_lambda must be >= 0, got {noise_lambda!r}")
        self.noise_lambda = float(noise_lambda)
        self.seed = check_int("seed", seed)
        self.calls = 0

    def degenerate(self, n: int) -> Degenerate | None:
        if n >= 3:
            return None
        return Degenerate(None, n, f"FLAME clusters at least 3 updates; with {n} it keeps them all (a clipped average)")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *,
                 keep_at_most: int | None = None) -> AggregationResult:
        n = updates.shape[0]
        g = gram(updates)  # (n, n) float64, one pass
        dist = (1 - cosine_from_gram(g)).clamp_(0, 2)
        dist.fill_diagonal_(0)
        kept, info = majority_cluster(dist)
        norms = g.diagonal().clamp_min(0).sqrt()  # (n,)
        bound = float(median(norms, dim=0))
        factors = clip_factors(norms, bound)
        p = normalize(weights * keep_mask(~kept, keep_at_most))
        update = (p * factors).to(updates.dtype) @ updates  # (d,)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        if self.noise_lambda > 0:
            noise = torch.randn(update.shape, generator=gen, dtype=update.dtype)
            update += noise.mul_(self.noise_lambda * bound)
        off_diag = dist + torch.diag(torch.full((n,), float("nan"), dtype=dist.dtype))
        scores = off_diag.nanmedian(dim=1).values if n > 1 else torch.zeros(1, dtype=torch.float64)
        info.update(median_norm=bound, clip_factors=[round(float(f), 6) for f in factors])
        return AggregationResult(update=update, weights=p, flagged=~kept, scores=scores, info=info)

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])


def majority_cluster(dist: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Boolean mask (n,) of the largest HDBSCAN cluster of a precomputed distance matrix."""
    n = dist.shape[0]
    if n < 3:  # HDBSCAN needs min_cluster_size >= 2 and something to compare
        return torch.ones(n, dtype=torch.bool), {"fallback": f"n={n} < 3: no clustering"}
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1,
                     allow_single_cluster=True, copy=True).fit(dist.numpy()).labels_
    labels = torch.as_tensor(labels)
    clustered = labels[labels >= 0]
    if clustered.numel() == 0:
        return torch.ones(n, dtype=torch.bool), {"fallback": "HDBSCAN found no cluster; all kept"}
    counts = torch.bincount(clustered)
    return labels == int(counts.argmax()), {"num_clusters": int(counts.numel())}
