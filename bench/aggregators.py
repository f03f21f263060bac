"""Cost of every registered aggregator relative to FedAvg, in time and peak memory.

    python bench/aggregators.py            # n in {10, 50} x d in {1M, 16.8M} (16.8M = LoRA r=32
                                           # on q,v of a 7B model: 32 layers x 2 x 32 x 8192)
    python bench/aggregators.py --quick    # d in {100k, 1M}: a fast check
    python bench/aggregators.py --n 20 --d 2000000 --only median,krum

Each (aggregator, n, d) runs in a fresh subprocess so peaks do not mix: it stacks random fp32
updates (n, d), resets the peak RSS, then times the aggregator (median of 5 after a warmup; a
rule whose warmup takes over 20 s is timed by that single run). Reported: median seconds, the
ratio to FedAvg in the same run, and peak RSS growth over the process before the stack was
allocated, in units of the stack size ("2.0" = the stack plus one stack's worth of extras).
Targets: time <= 5x FedAvg at n=50, d=16.8M; peak <= 2x the stack. Rules that need the
behaviour probe (`safety-probe`) cost what the probe costs, on the model: `python bench/probe.py`.
`oracle` gets a ground truth (the last fifth of the rows malicious).

Against Flower (bench/flower_rules.py): for the rules Flower ships too (fedavg, median,
trimmed-mean, krum, multi-krum, bulyan), Flower's own strategy runs on the same stack in its own
subprocess, timed the same way; `x flower` = fedsafe / Flower's `aggregate_train`, and
`x flower math` = fedsafe / (Flower less its reading of the replies' bytes into numpy and its
garbage collection, which fedsafe's rules never pay). Target: <= 1.0x for every one at n=50, d=16.8M. Every rule is also
timed against its own lower bound: one pass over the stack for averaging rules, a sort of every
column for order statistics (`x bound`). `--no-flower` skips both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fedsafe, in workers too
from common import current_rss_mb, machine, peak_rss_mb, report, reset_peak_rss, timeit  # noqa: E402

FULL_D = [1_000_000, 16_777_216]
QUICK_D = [100_000, 1_000_000]
SLOW_SECONDS = 20.0  # a warmup slower than this is the measurement (no repeats)
TIME_TARGET, MEMORY_TARGET = 5.0, 2.0
FLOWER_TARGET = 1.0  # fedsafe / Flower's math, per rule Flower ships


def worker(name: str, n: int, d: int, threads: int | None) -> dict:
    import torch

    from fedsafe.aggregators import call_aggregator, get_aggregator

    if threads:
        torch.set_num_threads(threads)
    if ":" in name:  # flower:<rule> or bound:<pass|sort>
        return reference_worker(*name.split(":", 1), n, d)
    # One tiny call first: lazy imports (sklearn for FLAME) and thread pools are not the rule's cost.
    tiny = torch.randn(n, 256, generator=torch.Generator().manual_seed(2))
    ids, malicious = list(range(n)), [i >= n - n // 5 for i in range(n)]
    call_aggregator(get_aggregator(name), tiny, torch.ones(n), client_ids=ids, malicious=malicious)
    agg = get_aggregator(name)
    base = current_rss_mb()
    updates, weights = stack(n, d)
    stacked = updates.numel() * 4 / 2**20
    measured_peak = reset_peak_rss()

    def run():
        call_aggregator(agg, updates, weights, client_ids=ids, malicious=malicious)

    start = time.perf_counter()
    run()  # warmup
    first = time.perf_counter() - start
    runs = 1 if first > SLOW_SECONDS else (2 if first > 2 else 5)
    seconds = first if runs == 1 else timeit(run, repeats=runs, warmup=0)
    return {"seconds": seconds, "runs": runs, "stacked_mb": stacked,
            "peak_over_base_mb": peak_rss_mb() - base, "peak_reset": measured_peak}


def stack(n: int, d: int):
    """The same random (n, d) fp32 updates and (n,) weights in every worker."""
    import torch

    updates = torch.randn(n, d, generator=torch.Generator().manual_seed(0))  # (n, d) fp32
    weights = torch.randint(10, 100, (n,), generator=torch.Generator().manual_seed(1)).float()
    return updates, weights


def reference_worker(kind: str, name: str, n: int, d: int) -> dict:
    """Flower's implementation of rule `name`, or a lower bound ('pass' or 'sort'), timed as a rule."""
    from flower_rules import bound_run, flower_run

    updates, weights = stack(n, d)
    if kind == "bound":
        run = bound_run(name, updates, weights)
        timed = lambda: (run(), 0.0)[1]  # noqa: E731
    else:
        run = flower_run(name, updates, weights)
        del updates  # the replies hold the data now
        timed = lambda: run()[1]  # noqa: E731
    reads = []
    start = time.perf_counter()
    reads.append(timed())
    first = time.perf_counter() - start
    runs = 1 if first > SLOW_SECONDS else (2 if first > 2 else 5)
    if runs == 1:
        return {"seconds": first, "overhead_seconds": reads[0], "runs": 1}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        reads.append(timed())
        times.append(time.perf_counter() - start)
    order = sorted(range(runs), key=times.__getitem__)
    mid = order[len(order) // 2]
    return {"seconds": times[mid], "overhead_seconds": reads[1 + mid], "runs": runs}


def measure(name: str, n: int, d: int, threads: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--n", str(n), "--d", str(d)]
    cmd += ["--threads", str(threads)] if threads else []
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"{name} n={n} d={d} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d in {100k, 1M} instead of {1M, 16.8M}")
    parser.add_argument("--n", type=lambda s: [int(v) for v in s.split(",")], default=[10, 50])
    parser.add_argument("--d", type=lambda s: [int(float(v)) for v in s.split(",")], default=None)
    parser.add_argument("--only", type=lambda s: s.split(","), default=None, help="comma-separated names")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-flower", action="store_true", help="skip Flower's rules and the lower bounds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n[0], args.d[0], args.threads)))
        return

    from fedsafe.aggregators import available, get_aggregator

    candidates = args.only or available()
    probed = [a for a in candidates if getattr(get_aggregator(a), "needs_probe", False)]
    if args.only and probed:
        parser.error(f"--only {','.join(probed)}: the behaviour probe is its cost; python bench/probe.py")
    names = ["fedavg"] + [a for a in candidates if a != "fedavg" and a not in probed]
    dims = args.d or (QUICK_D if args.quick else FULL_D)
    rows, figures = [], {"time_ratio": {}, "memory_ratio": {}, "rules": {}}
    before = machine()
    for n in args.n:
        for d in dims:
            key = f"n={n},d={d}"
            figures["time_ratio"][key], figures["memory_ratio"][key], figures["rules"][key] = {}, {}, {}
            baseline, bounds = None, {}
            for name in names:
                m = measure(name, n, d, args.threads)
                baseline = baseline or m["seconds"]
                ratio, memory = m["seconds"] / baseline, m["peak_over_base_mb"] / m["stacked_mb"]
                figures["time_ratio"][key][name] = round(ratio, 2)
                figures["memory_ratio"][key][name] = round(memory, 2)
                rule = {"seconds": round(m["seconds"], 4)}
                row = [n, d, name, m["seconds"], ratio, memory, m["runs"]]
                if not args.no_flower:
                    rule.update(versus_references(name, n, d, m["seconds"], args.threads, bounds))
                    row += [rule.get("flower_s", "-"), rule.get("ratio_vs_flower", "-"),
                            rule.get("ratio_vs_flower_math", "-"), rule["bound"], rule["ratio_vs_bound"]]
                figures["rules"][key][name] = rule
                rows.append(row)
                print(f"# {key} {name}: {m['seconds']:.3f} s, {ratio:.1f}x fedavg, peak {memory:.2f}x stack"
                      + (f", {rule['ratio_vs_flower']}x flower" if "ratio_vs_flower" in rule else ""),
                      file=sys.stderr, flush=True)
    slow = {k: [a for a, r in v.items() if r > TIME_TARGET] for k, v in figures["time_ratio"].items()}
    heavy = {k: [a for a, r in v.items() if r > MEMORY_TARGET] for k, v in figures["memory_ratio"].items()}
    behind = {k: [a for a, r in v.items() if r.get("ratio_vs_flower_math", 0) > FLOWER_TARGET]
              for k, v in figures["rules"].items()}
    figures.update(threads=args.threads or "torch default", time_target=TIME_TARGET,
                   memory_target=MEMORY_TARGET, over_time_target=slow,
                   over_memory_target=heavy, flower_target=FLOWER_TARGET, behind_flower=behind,
                   machine=before, load_after=machine()["load_1m"])
    header = ["n", "d", "aggregator", "median s", "x fedavg", "peak/stack", "runs"]
    header += [] if args.no_flower else ["flower s", "x flower", "x flower math", "bound", "x bound"]
    print(f"{before['cores']} cores, load {before['load_1m']} -> {figures['load_after']}")
    report("aggregators", header, rows, figures)


def versus_references(name: str, n: int, d: int, seconds: float, threads: int | None, bounds: dict) -> dict:
    """The rule's time against Flower's implementation (if any) and its own lower bound; `bounds`
    keeps each bound's time for the other rules of this (n, d)."""
    from flower_rules import SORT_BOUND, strategy

    kind = "sort" if name in SORT_BOUND else "pass"
    if kind not in bounds:
        bounds[kind] = measure(f"bound:{kind}", n, d, threads)["seconds"]
    out = {"bound": kind, "bound_s": round(bounds[kind], 4), "ratio_vs_bound": round(seconds / bounds[kind], 2)}
    if strategy(name, n) is not None:
        f = measure(f"flower:{name}", n, d, threads)
        out.update(flower_s=round(f["seconds"], 4), flower_overhead_s=round(f["overhead_seconds"], 4),
                   ratio_vs_flower=round(seconds / f["seconds"], 2),
                   ratio_vs_flower_math=round(seconds / max(f["seconds"] - f["overhead_seconds"], 1e-9), 2))
    return out


if __name__ == "__main__":
    main()
