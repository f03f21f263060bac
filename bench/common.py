"""Shared helpers for bench/ scripts: timing, memory, and one report format.

Every bench prints a readable table and, as its LAST line, one JSON object
{"bench": <name>, ...figures} that tools can parse. Ratios are always measured within one run,
on one machine, so they stay comparable across machines while absolute seconds do not.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of `repeats` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ru_maxrss where /proc is absent)."""
    value = _proc_status("VmHWM")
    return value if value is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    value = _proc_status("VmRSS")
    return value if value is not None else peak_rss_mb()


def rss_parts_mb() -> tuple[float | None, float | None]:
    """(anonymous, file-backed) resident MiB now: mapped checkpoint pages are file-backed, and
    clean, so the kernel can drop them under pressure where it cannot drop anonymous memory."""
    return _proc_status("RssAnon"), _proc_status("RssFile")


def reset_peak_rss() -> bool:
    """Restart peak tracking from the current RSS (Linux clear_refs 5); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    """Cores and load average now: other busy processes skew ratios, so every bench says."""
    one, five, _ = os.getloadavg()
    return {"cores": os.cpu_count(), "load_1m": round(one, 2), "load_5m": round(five, 2)}


def tiny_model(path: Path) -> Path:
    """Save the tests' tiny random Llama (2 layers, hidden 64, seeded) and its byte-level
    tokenizer to `path`, as a Hub-style folder that `model.name` accepts."""
    import torch
    from transformers import LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` is not a package on the path
    from tests.conftest import _tiny_llama_config, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(_tiny_llama_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def report(bench: str, header: list[str], rows: list[list], figures: dict) -> None:
    """Print an aligned table, then one JSON line {"bench": bench, **figures} as the last line."""
    table(header, rows)
    print(json.dumps({"bench": bench, **figures}), flush=True)


def table(header: list[str], rows: list[list]) -> None:
    """An aligned table: the first column and text columns left, numbers right."""
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    left = [i == 0 or all(isinstance(row[i], str) and row[i] != "-" for row in rows) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(row, widths, left)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _proc_status(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None
