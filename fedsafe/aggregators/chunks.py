"""Memory-bounded, threaded work over the columns of an (n, d) update matrix.

Every rule that cannot be one BLAS call walks d in chunks of about CHUNK_ELEMS elements, so its
temporaries stay a few tens of MB whatever d is (16.8M for LoRA r=32 on q,v of a 7B model).
Per-coordinate sorting uses numpy's SIMD sort on CPU (x86-simd-sort, AVX-512/AVX2), measured
~10x torch.sort on short rows; numpy shares the tensors' memory, nothing is copied for it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

# Elements per chunk of the (n, d) matrix: 4M floats = 16 MB, small against any realistic stack,
# big enough that per-op overhead vanishes. Column count per chunk = CHUNK_ELEMS // n.
CHUNK_ELEMS = 1 << 22


def column_chunks(n: int, d: int, budget: int = CHUNK_ELEMS) -> list[slice]:
    """Slices over d so that an (n, cols) chunk holds about `budget` elements."""
    cols = max(1, budget // max(n, 1))
    return [slice(start, min(start + cols, d)) for start in range(0, d, cols)]


def map_chunks(fn: Callable[[slice], torch.Tensor], chunks: list[slice], width: int) -> torch.Tensor:
    """Sum over column chunks of fn(cols) -> (width,) float64, run on torch's thread count.

    The order-statistic rules spend their time in numpy's sort, which releases the GIL, so
    threads scale it across cores as BLAS scales FedAvg. Each fn writes only its own columns of
    any output. Results are copied into a buffer of the calling thread: a tensor made in a worker
    and kept alive pins that thread's malloc arena, and with it GBs of freed chunk buffers.
    """
    totals = torch.zeros(len(chunks), width, dtype=torch.float64)

    def run(i: int) -> None:
        totals[i].copy_(fn(chunks[i]))

    workers = min(len(chunks), torch.get_num_threads(), os.cpu_count() or 1)
    if workers <= 1:
        for i in range(len(chunks)):
            run(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(len(chunks))))
    return totals.sum(dim=0)


def sort_columns(c: torch.Tensor, *, order: bool = False):
    """(n, C) chunk -> (C, n) with each column's values ascending (and, if asked, the row index
    each sorted value came from). numpy's SIMD sort on CPU, torch.sort elsewhere."""
    rows = c.T.clone(memory_format=torch.contiguous_format)  # (C, n) copy; at d = 1, .contiguous() would not copy
    if rows.device.type != "cpu":
        values, idx = rows.sort(dim=1)
        return (values, idx) if order else values
    if not order:
        rows.numpy().sort(axis=1)  # in place, rows is our own copy
        return rows
    idx = np.argsort(rows.numpy(), axis=1)
    return rows.gather(1, torch.from_numpy(idx)), torch.from_numpy(idx)


def sort_last(t: torch.Tensor) -> torch.Tensor:
    """Sort a contiguous tensor along its last dim in place (numpy SIMD sort on CPU)."""
    if t.device.type == "cpu":
        t.numpy().sort(axis=-1)
        return t
    return t.sort(dim=-1).values


def count_within(c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per row of c (n, C): how many columns have lo <= value <= hi. (n,) float64.
    numpy on CPU: its SIMD compare-and-count is ~3x torch's bool reductions here."""
    if c.device.type != "cpu":
        return ((c >= lo) & (c <= hi)).sum(dim=1, dtype=torch.int64).to(torch.float64)
    a, low, high = c.numpy(), lo.numpy(), hi.numpy()
    return torch.from_numpy(np.count_nonzero((a >= low) & (a <= high), axis=1).astype(np.float64))
