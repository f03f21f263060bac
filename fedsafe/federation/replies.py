"""Server-side checks on client replies, before any aggregator sees them.

A reply that fails is dropped with a reason (logged, counted in results.json); the round goes on
with the rest. Whatever the aggregator, it only ever receives finite fp32 deltas of the right
shape with a positive example count (and, under SCAFFOLD, a control variate checked alike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

MAX_EXAMPLES = 10**9  # a claim above this is a lie meant to grab weight


class InvalidReply(ValueError):
    """Why one client reply cannot be aggregated."""


@dataclass(frozen=True)
class ClientUpdate:
    node_id: int
    partition_id: int
    delta: torch.Tensor  # (d,) fp32
    num_examples: int
    metrics: dict[str, float]
    control: torch.Tensor | None = None  # (d,) SCAFFOLD: the client's new control variate c_i


def _flat(record, global_state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """One ArrayRecord shaped as the global adapter, as a finite fp32 vector (d,)."""
    if not isinstance(record, ArrayRecord):
        raise InvalidReply(f"no ArrayRecord {name!r}")
    if set(record.keys()) != set(global_state):
        missing = sorted(set(global_state) - set(record.keys()))
        extra = sorted(set(record.keys()) - set(global_state))
        raise InvalidReply(f"wrong keys in {name!r} (missing {missing[:2]}, unexpected {extra[:2]})")
    parts = []
    for key, reference in global_state.items():
        array = record[key]
        if tuple(array.shape) != tuple(reference.shape):
            raise InvalidReply(f"wrong shape for {key} in {name!r}: {tuple(array.shape)} != {tuple(reference.shape)}")
        values = array.numpy()
        if not np.issubdtype(values.dtype, np.floating):
            raise InvalidReply(f"wrong dtype for {key} in {name!r}: {values.dtype}")
        parts.append(torch.from_numpy(values.astype(np.float32, copy=False).reshape(-1)))
    flat = torch.cat(parts)  # (d,)
    if not torch.isfinite(flat).all():
        raise InvalidReply(f"non-finite values in {name!r}")
    return flat


def check_reply(content: RecordDict, node_id: int, expected_partition: int | None,
                global_state: dict[str, torch.Tensor], global_flat: torch.Tensor,
                control: str | None = None) -> ClientUpdate:
    """Validate one reply against the global adapter; raise InvalidReply with the reason.
    `control`: the key of the control-variate record the reply must carry (SCAFFOLD)."""
    flat = _flat(content.get("arrays"), global_state, "arrays")
    metrics = content.get("metrics")
    if not isinstance(metrics, MetricRecord):
        raise InvalidReply("no MetricRecord 'metrics'")
    variate = None if control is None else _flat(content.get(control), global_state, control)
    n = metrics.get("num-examples")
    if not isinstance(n, (int, float)) or isinstance(n, bool) or not 0 < n <= MAX_EXAMPLES:
        raise InvalidReply(f"num-examples={n!r} is not in 1..{MAX_EXAMPLES}")
    pid = metrics.get("partition-id")
    if expected_partition is not None and pid != expected_partition:
        raise InvalidReply(f"partition-id={pid!r} but this node holds partition {expected_partition}")
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return ClientUpdate(node_id=node_id, partition_id=int(expected_partition if expected_partition is not None else pid),
                        delta=flat - global_flat, num_examples=int(n), metrics=scalars, control=variate)
