"""`oracle`: a reference, not a defense. It reads the run's ground truth (which clients the
attack made malicious), excludes exactly their updates and averages the rest by weight, as
FedAvg. What it reaches is what any rule that works by excluding clients reaches when it
detects perfectly (recall and precision 1) in the same run; the gap between it and the no-attack
run is what excluding costs (the attackers' own benign shares never reach the model), which no
detector can close. With `clients.reserve`, the first honest reserves stand in for the excluded
clients, as for `safety-probe`.
"""

from __future__ import annotations

import torch

from fedsafe.defenses.base import AggregationResult
from fedsafe.defenses.fedavg import FedAvg
from fedsafe.defenses.registry import register


@register("oracle")
class Oracle:
    needs_malicious = True  # the strategy passes malicious: one bool per row, the run's ground truth
    takes_reserves = True  # and keep_at_most: the round's client count

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *, malicious,
                 keep_at_most: int | None = None) -> AggregationResult:
        flagged = torch.tensor([bool(m) for m in malicious], dtype=torch.bool)  # (n,)
        kept = (~flagged).nonzero().flatten()[:keep_at_most]  # None: all
        full = torch.zeros(len(weights), dtype=torch.float64)
        if kept.numel() == 0:  # every update is an attacker's: the global adapter stays as it is
            return AggregationResult(update=torch.zeros(updates.shape[1], dtype=updates.dtype), weights=full,
                                     flagged=flagged)
        inner = FedAvg()(updates[kept], weights[kept])
        full[kept] = inner.weights
        return AggregationResult(update=inner.update, weights=full, flagged=flagged)
