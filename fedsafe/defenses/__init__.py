"""Robust aggregation of client LoRA deltas: the Aggregator contract, a registry, built-in rules.

    from fedsafe.defenses import get_aggregator, call_aggregator
    agg = get_aggregator("trimmed-mean", beta=0.2)      # or "package.module:attr"
    result = call_aggregator(agg, updates, weights)     # updates (n, d), weights (n,)

Importing this package registers every built-in rule and imports neither transformers, peft,
sklearn nor flwr; the Flower strategy (strategy.py) and the post-hoc defense (posthoc.py) are
imported explicitly by their users.
"""

from fedsafe.defenses.base import AggregationResult, Aggregator, call_aggregator, validate_updates
from fedsafe.defenses.detection import detection_metrics
from fedsafe.defenses.registry import available, get_aggregator, register

# Built-in rules register themselves on import.
from fedsafe.defenses import (bulyan, dnc, fedavg, flame, foolsgold, krum, median,  # noqa: E402,F401
                              norm_bound, oracle, residual, safety_probe, trimmed_mean)

__all__ = ["AggregationResult", "Aggregator", "available", "call_aggregator", "detection_metrics",
           "get_aggregator", "register", "validate_updates"]
