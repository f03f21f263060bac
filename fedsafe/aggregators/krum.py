"""Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent", NeurIPS 2017).

Score each client by the summed squared distance to its n - f - 2 nearest others (at least one,
as Flower's select_multikrum); Krum returns the best-scored update, Multi-Krum the examples-
weighted mean of the m best (m = num_selected, or n - f when it is 0), as Flower's MultiKrum. All
distances come from one Gram matrix (base.pairwise_sq_dists). `scores` are the Krum scores;
clients not selected are flagged.
`krum` with variant="neighbourhood" is the paper's code (FedLLM-Attack fed_global.py get_krum):
score by the summed L2 (not squared) distance to the n - f - 1 nearest others, then average the
best one and those n - f - 1 neighbours of it (examples-weighted here; the paper's clients hold
equal data, where the two agree).
With reserves (`takes_reserves`) all rows are scored and at most keep_at_most of the selected,
the first in row order, are averaged; the other selected rows get weight 0, unflagged.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import (AggregationResult, Degenerate, check_int, keep_mask, normalize,
                                      pairwise_sq_dists, weighted_mean)
from fedsafe.aggregators.registry import register

KRUM_VARIANTS = ("classic", "neighbourhood")


@register("multi-krum")
class MultiKrum:
    takes_reserves = True

    def __init__(self, num_malicious: int = 1, num_selected: int = 0):
        self.num_malicious = check_int("num_malicious", num_malicious)
        self.num_selected = check_int("num_selected", num_selected)  # 0: n - f

    def selection_size(self, n: int) -> int:
        m = self.num_selected or n - self.num_malicious
        return max(1, min(m, n))

    def select(self, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n,) bool selected, (n,) scores from the squared distances (n, n)."""
        order, scores = krum_ranking(dist, self.num_malicious)
        selected = torch.zeros(len(dist), dtype=torch.bool)
        selected[order[:self.selection_size(len(dist))]] = True
        return selected, scores

    def degenerate(self, n: int) -> Degenerate | None:
        f = self.num_malicious
        if n - f - 2 < 1:
            if n < 3:
                return Degenerate(None, n, f"Krum scores each update by its n - f - 2 nearest others: {n} "
                                           f"updates leave none at any num-malicious; it needs 3")
            return Degenerate("num_malicious", f, f"n - f - 2 = {n - f - 2} leaves no neighbour to score each of "
                                                  f"{n} updates by; the largest that leaves one is {n - 3}")
        if self.selection_size(n) < n:
            return None
        if self.num_selected:
            return Degenerate("num_selected", self.num_selected, f"selects all {n} updates: the plain average; "
                                                                 f"the largest that leaves one out is {n - 1}")
        return Degenerate("num_malicious", f, f"selects n - f = all {n} updates (num-selected=0): the plain "
                                              f"average; the smallest that leaves one out is 1")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *,
                 keep_at_most: int | None = None) -> AggregationResult:
        selected, scores = self.select(pairwise_sq_dists(updates))  # (n,), (n,)
        kept = keep_mask(~selected, keep_at_most)  # (n,) the first keep_at_most selected rows
        p = normalize(weights * kept)  # examples-weighted over what is averaged
        only = kept.nonzero().flatten()
        update = updates[only[0]].clone() if len(only) == 1 else weighted_mean(updates, p)
        return AggregationResult(update=update, weights=p, flagged=~selected, scores=scores,
                                 info={"num_selected": int(selected.sum())})


@register("krum")
class Krum(MultiKrum):
    def __init__(self, num_malicious: int = 1, variant: str = "classic"):
        if variant not in KRUM_VARIANTS:
            raise ValueError(f"defense.krum.variant={variant!r}: accepted {', '.join(KRUM_VARIANTS)}")
        super().__init__(num_malicious=num_malicious, num_selected=1)
        self.variant = variant

    def select(self, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.variant == "classic":
            return super().select(dist)
        return neighbourhood(dist, self.num_malicious)

    def degenerate(self, n: int) -> Degenerate | None:
        if self.variant == "classic":
            return super().degenerate(n)
        f = self.num_malicious
        if n < 3:
            return Degenerate(None, n, f"the neighbourhood of one of {n} updates is either all or none of the "
                                       f"others; it needs 3")
        if f == 0:
            return Degenerate("num_malicious", f, f"averages the best update and its n - f - 1 nearest: all {n} "
                                                  f"updates, the plain average; the smallest that leaves one out is 1")
        if n - f - 1 < 1:
            return Degenerate("num_malicious", f, f"n - f - 1 = {n - f - 1} leaves the best of {n} updates no "
                                                  f"neighbour; the largest that leaves one is {n - 2}")
        return None


def neighbourhood(dist: torch.Tensor, num_malicious: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Krum: (n,) bool, the best update and its n - f - 1 nearest others, and the
    (n,) scores, each update's summed L2 distance to its n - f - 1 nearest others."""
    n = dist.shape[0]
    k = min(n - 1, max(0, n - num_malicious - 1))
    length = dist.sqrt()  # (n, n) L2 distances, as torch.cdist in the paper's code
    near = (length + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype))).topk(k, dim=1, largest=False)
    scores = near.values.sum(dim=1)  # (n,)
    best = int(rank(scores, length)[0])
    selected = torch.zeros(n, dtype=torch.bool)
    selected[best] = True
    selected[near.indices[best]] = True
    return selected, scores


def krum_scores(dist: torch.Tensor, num_malicious: int) -> torch.Tensor:
    """Krum score (n,): sum of squared distances to the n - f - 2 nearest other clients.

    As Flower's select_multikrum: at least 1 neighbour, so small federations still get a score.
    """
    n = dist.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=dist.dtype)
    k = min(n - 1, max(1, n - num_malicious - 2))
    others = dist + torch.diag(torch.full((n,), float("inf"), dtype=dist.dtype))  # exclude self
    return others.topk(k, dim=1, largest=False).values.sum(dim=1)


def krum_ranking(dist: torch.Tensor, num_malicious: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clients best-first by Krum score, and the scores (n,)."""
    scores = krum_scores(dist, num_malicious)
    return rank(scores, dist), scores


def rank(scores: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """(n,) indices best (lowest score) first. With one neighbour (n <= f + 3) two mutual nearest
    neighbours always tie; ties go to the client with the smaller total distance to everyone, so
    the choice never depends on row order."""
    order = dist.sum(dim=1).argsort(stable=True)
    return order[scores[order].argsort(stable=True)]
