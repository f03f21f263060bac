"""Robust aggregation of client LoRA deltas: the Aggregator contract, a registry, built-in rules.

    from fedsafe.aggregators import get_aggregator, call_aggregator
    agg = get_aggregator("trimmed-mean", beta=0.2)      # or "package.module:attr"
    result = call_aggregator(agg, updates, weights)     # updates (n, d), weights (n,)

Importing this package registers every built-in rule and imports neither transformers, peft,
sklearn nor flwr: rules are pure tensor code. The Flower strategy that calls them lives in
`fedsafe.federation`, the post-hoc defense in `fedsafe.posthoc`.
"""

from fedsafe.aggregators.base import AggregationResult, Aggregator, Degenerate, call_aggregator, validate_updates
from fedsafe.aggregators.detection import detection_metrics
from fedsafe.aggregators.registry import available, get_aggregator, register

# Built-in rules register themselves on import.
from fedsafe.aggregators import (bulyan, dnc, fedavg, flame, foolsgold, krum, median,  # noqa: E402,F401
                                 norm_bound, oracle, residual, safety_probe, trimmed_mean)

__all__ = ["AggregationResult", "Aggregator", "Degenerate", "available", "call_aggregator", "detection_metrics",
           "get_aggregator", "register", "validate_updates"]
