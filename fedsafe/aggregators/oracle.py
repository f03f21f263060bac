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

from fedsafe.aggregators.base import AggregationResult, aggregate_kept, first_kept
from fedsafe.aggregators.fedavg import FedAvg
from fedsafe.aggregators.registry import register


@register("oracle")
class Oracle:
    needs_malicious = True  # the strategy passes malicious: one bool per row, the run's ground truth
    takes_reserves = True  # and keep_at_most: the round's client count

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *, malicious,
                 keep_at_most: int | None = None) -> AggregationResult:
        flagged = torch.tensor(malicious, dtype=torch.bool)  # (n,)
        return aggregate_kept(FedAvg(), updates, weights, flagged, first_kept(flagged, keep_at_most))
