"""Compatibility path: the aggregation rules moved to `fedsafe.aggregators`.

User code written as `from fedsafe.defenses import AggregationResult, get_aggregator` keeps working.
"""

from fedsafe.aggregators import (AggregationResult, Aggregator, available, call_aggregator,  # noqa: F401
                                 detection_metrics, get_aggregator, register, validate_updates)
from fedsafe.aggregators import __all__  # noqa: F401
