"""FedAvg: the examples-weighted mean of client updates (McMahan et al., AISTATS 2017).

The undefended baseline every robust rule is compared with, in tests and in bench/.
"""

from __future__ import annotations

import torch

from fedsafe.aggregators.base import AggregationResult, no_flags, normalize, weighted_mean
from fedsafe.aggregators.registry import register


@register("fedavg")
class FedAvg:
    def __call__(self, updates: torch.Tensor, weights: torch.Tensor) -> AggregationResult:
        p = normalize(weights)  # (n,)
        return AggregationResult(update=weighted_mean(updates, p), weights=p, flagged=no_flags(len(p)))
