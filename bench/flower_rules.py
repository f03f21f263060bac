"""Flower's own implementations of the rules fedsafe also ships, and each rule's lower bound, for
bench/aggregators.py.

Flower's strategies aggregate reply Messages, so the same (n, d) stack becomes n replies of one
single-array ArrayRecord each, with `num-examples` from the same weights; building them is not
timed, Flower's `aggregate_train` is. Inside it Flower reads every reply's bytes into numpy
(`Array.numpy`, a copy), which fedsafe's rules never pay (they get the stack), and its Bulyan
runs the garbage collector after each reply it converts: both are timed apart, so its math alone
(`aggregate_train` less reading and collecting) can be compared too.

Parameters follow fedsafe's defaults of each rule, as tests/aggregators/test_flower_reference.py
maps them. Bulyan gets fedsafe's selection (recursive Krum, the paper's) built on Flower's own
`compute_distances`, computed once as fedsafe does; Flower's default selects with one-shot
Multi-Krum instead.

Lower bounds for any rule: one pass over the stack (`weights @ updates`, FedAvg's cost) for
averaging rules, a sort of every column (fedsafe's threaded chunked SIMD sort, nothing kept) for
order statistics.
"""

from __future__ import annotations

import contextlib
import gc
import time

import numpy as np
import torch

SORT_BOUND = ("median", "trimmed-mean", "bulyan", "residual")  # order statistics; the rest: one pass


def strategy(name: str, n: int):
    """Flower's strategy for fedsafe's rule `name` with fedsafe's default parameters, or None."""
    from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

    from fedsafe.aggregators import get_aggregator

    rule = get_aggregator(name)
    return {
        "fedavg": lambda: FedAvg(),
        "median": lambda: FedMedian(),
        "trimmed-mean": lambda: FedTrimmedAvg(beta=rule.beta),
        "krum": lambda: Krum(num_malicious_nodes=rule.num_malicious),
        "multi-krum": lambda: MultiKrum(num_malicious_nodes=rule.num_malicious,
                                        num_nodes_to_select=rule.selection_size(n)),
        "bulyan": lambda: Bulyan(num_malicious_nodes=rule.num_malicious, selection_rule=recursive_krum),
    }.get(name, lambda: None)()


def recursive_krum(contents, num_malicious: int, theta: int):
    """fedsafe's Bulyan selection from Flower's parts: Flower's distance matrix once, then Krum
    (Flower's scoring: the n - f - 2 nearest, at least 1) on what remains, theta times."""
    from flwr.serverapp.strategy.multikrum import compute_distances

    key = list(contents[0].array_records.keys())[0]
    dist = compute_distances([c[key] for c in contents])  # (n, n)
    remaining, chosen = list(range(len(contents))), []
    for _ in range(theta):
        sub = dist[np.ix_(remaining, remaining)]
        k = max(1, len(remaining) - num_malicious - 2)
        scores = [np.sort(row)[1:k + 1].sum() for row in sub]
        chosen.append(remaining.pop(int(np.argmin(scores))))
    return [contents[i] for i in chosen]


def arrays_of(updates: torch.Tensor) -> list:
    """One Flower Array per row of the stack (serialized once; replies reuse them)."""
    from flwr.app import Array

    return [Array(row.numpy()) for row in updates]


def replies(arrays: list, weights: torch.Tensor) -> list:
    from flwr.app import ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

    out = []
    for node, (array, w) in enumerate(zip(arrays, weights.tolist()), start=1):
        metadata = Metadata(run_id=1, message_id=f"reply-{node}", src_node_id=node, dst_node_id=0,
                            reply_to_message_id="", group_id="1", created_at=0.0, ttl=3600.0,
                            message_type=MessageType.TRAIN)
        content = RecordDict({"arrays": ArrayRecord({"update": array}),
                              "metrics": MetricRecord({"num-examples": int(w)})})
        out.append(Message(content, metadata=metadata))
    return out


@contextlib.contextmanager
def overhead_timed():
    """Seconds Flower spends, while inside, in `Array.numpy` (reading a reply's bytes) and in
    garbage collection (its Bulyan collects after each reply it converts)."""
    from flwr.app import Array

    original, spent, started = Array.numpy, [0.0], []

    def numpy(self):
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            spent[0] += time.perf_counter() - start

    def collecting(phase: str, _info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            spent[0] += time.perf_counter() - started.pop()

    Array.numpy = numpy
    gc.callbacks.append(collecting)
    try:
        yield spent
    finally:
        Array.numpy = original
        gc.callbacks.remove(collecting)


def flower_run(name: str, updates: torch.Tensor, weights: torch.Tensor):
    """A callable running Flower's rule once on fresh replies -> (total s, reading + gc s); None
    when Flower has no counterpart. The replies hold their own copy of the data."""
    if strategy(name, updates.shape[0]) is None:
        return None
    arrays, n = arrays_of(updates), updates.shape[0]

    def run() -> tuple[float, float]:
        messages, rule = replies(arrays, weights), strategy(name, n)
        with overhead_timed() as spent:
            start = time.perf_counter()
            result, _ = rule.aggregate_train(1, messages)
            total = time.perf_counter() - start
        if result is None:
            raise RuntimeError(f"Flower's {type(rule).__name__} returned nothing for n={n}")
        return total, spent[0]

    return run


def bound_run(kind: str, updates: torch.Tensor, weights: torch.Tensor):
    """A callable for a lower bound: 'pass' (one BLAS pass) or 'sort' (every column sorted)."""
    from fedsafe.aggregators.chunks import column_chunks, map_chunks, sort_columns

    n, d = updates.shape
    if kind == "pass":
        return lambda: weights @ updates  # (d,)

    def chunk(cols: slice) -> torch.Tensor:
        sort_columns(updates[:, cols])
        return torch.zeros(1, dtype=torch.float64)

    return lambda: map_chunks(chunk, column_chunks(n, d), 1)
