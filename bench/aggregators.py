"""Cost of every registered aggregator relative to FedAvg, in time and peak memory, and of
every server optimizer's step.

    python bench/aggregators.py            # n in {10, 50} x d in {1M, 16.8M} (16.8M = LoRA r=32
                                           # on q,v of a 7B model: 32 layers x 2 x 32 x 8192)
    python bench/aggregators.py --quick    # d in {100k, 1M}: a fast check
    python bench/aggregators.py --n 20 --d 2000000 --only median,krum
    python bench/aggregators.py --quick --only fedavg --optimizers fedadam    # one optimizer's step

Each (aggregator, n, d) runs in a fresh subprocess so peaks do not mix: it stacks random fp32
updates (n, d), resets the peak RSS, then times the aggregator (median of 5 after a warmup; a
rule whose warmup takes over 20 s is timed by that single run). Reported: median seconds, the
ratio to FedAvg in the same run, and peak RSS growth over the process before the stack was
allocated, in units of the stack size ("2.0" = the stack plus one stack's worth of extras).
Targets: time <= 5x FedAvg at n=50, d=16.8M; peak <= 2x the stack. Rules that need the
behaviour probe (`safety-probe`) cost what the probe costs, on the model: `python bench/probe.py`.
`oracle` gets a ground truth (the last fifth of the rows malicious).

Server optimizers (fedsafe.optimizers, applied after the aggregator each round) are timed the
same way on (d,) vectors, one step through `apply_optimizer` as the strategy calls it, in a
fresh subprocess per (optimizer, d): median seconds per step, the ratio to FedAvg's aggregation
at each n, the state kept between rounds and the step's transient peak, both in d-vectors (fp32).
fedavgm runs with server_momentum 0.9 (at its default 0 it is sgd).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's fedsafe, in workers too
from common import current_rss_mb, peak_rss_mb, report, reset_peak_rss, table, timeit  # noqa: E402

FULL_D = [1_000_000, 16_777_216]
QUICK_D = [100_000, 1_000_000]
SLOW_SECONDS = 20.0  # a warmup slower than this is the measurement (no repeats)
TIME_TARGET, MEMORY_TARGET = 5.0, 2.0
OPTIMIZER_PARAMS = {"fedavgm": {"server_momentum": 0.9}}  # the bench's settings where a default does nothing


def worker(name: str, n: int, d: int, threads: int | None) -> dict:
    import torch

    from fedsafe.aggregators import call_aggregator, get_aggregator

    if threads:
        torch.set_num_threads(threads)
    # One tiny call first: lazy imports (sklearn for FLAME) and thread pools are not the rule's cost.
    tiny = torch.randn(n, 256, generator=torch.Generator().manual_seed(2))
    ids, malicious = list(range(n)), [i >= n - n // 5 for i in range(n)]
    call_aggregator(get_aggregator(name), tiny, torch.ones(n), client_ids=ids, malicious=malicious)
    agg = get_aggregator(name)
    base = current_rss_mb()
    updates = torch.randn(n, d, generator=torch.Generator().manual_seed(0))  # (n, d) fp32
    weights = torch.randint(10, 100, (n,), generator=torch.Generator().manual_seed(1)).float()
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


def optimizer_worker(name: str, d: int, threads: int | None) -> dict:
    import torch

    from fedsafe.optimizers import apply_optimizer, get_optimizer

    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    global_vector, update = torch.randn(d, generator=g) * 0.01, torch.randn(d, generator=g) * 1e-3  # (d,)
    apply_optimizer(get_optimizer(name, **OPTIMIZER_PARAMS.get(name, {})), global_vector[:256], update[:256])
    opt = get_optimizer(name, **OPTIMIZER_PARAMS.get(name, {}))
    apply_optimizer(opt, global_vector, update)  # the first step allocates the state
    state = opt.state_dict() if hasattr(opt, "state_dict") else {}
    kept = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    base = current_rss_mb()
    measured_peak = reset_peak_rss()
    seconds = timeit(lambda: apply_optimizer(opt, global_vector, update), repeats=5, warmup=0)
    return {"seconds": seconds, "state_vectors": kept / d,
            "step_peak_vectors": (peak_rss_mb() - base) / (d * 4 / 2**20), "peak_reset": measured_peak}


def measure(name: str, n: int, d: int, threads: int | None, optimizer: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--n", str(n), "--d", str(d)]
    cmd += ["--optimizer-worker"] if optimizer else []
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
    parser.add_argument("--optimizers", type=lambda s: [v for v in s.split(",") if v], default=None,
                        help="comma-separated server optimizers (default: every registered one; '' for none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = optimizer_worker(args.worker, args.d[0], args.threads) if args.optimizer_worker else \
            worker(args.worker, args.n[0], args.d[0], args.threads)
        print(json.dumps(run))
        return

    from fedsafe.aggregators import available, get_aggregator
    from fedsafe.optimizers import available as optimizers

    candidates = args.only or available()
    probed = [a for a in candidates if getattr(get_aggregator(a), "needs_probe", False)]
    if args.only and probed:
        parser.error(f"--only {','.join(probed)}: the behaviour probe is its cost; python bench/probe.py")
    names = ["fedavg"] + [a for a in candidates if a != "fedavg" and a not in probed]
    dims = args.d or (QUICK_D if args.quick else FULL_D)
    rows, figures = [], {"time_ratio": {}, "memory_ratio": {}, "optimizer_seconds": {}, "optimizer_time_ratio": {}}
    steps, optimizer_rows = {}, []  # (optimizer, d) -> measurement: n does not enter a step
    for n in args.n:
        for d in dims:
            key = f"n={n},d={d}"
            figures["time_ratio"][key], figures["memory_ratio"][key] = {}, {}
            figures["optimizer_time_ratio"][key] = {}
            baseline = None
            for name in names:
                m = measure(name, n, d, args.threads)
                baseline = baseline or m["seconds"]
                ratio, memory = m["seconds"] / baseline, m["peak_over_base_mb"] / m["stacked_mb"]
                figures["time_ratio"][key][name] = round(ratio, 2)
                figures["memory_ratio"][key][name] = round(memory, 2)
                rows.append([n, d, name, m["seconds"], ratio, memory, m["runs"]])
                print(f"# {key} {name}: {m['seconds']:.3f} s, {ratio:.1f}x fedavg, peak {memory:.2f}x stack",
                      file=sys.stderr, flush=True)
            for name in optimizers() if args.optimizers is None else args.optimizers:
                if (name, d) not in steps:
                    steps[name, d] = measure(name, 1, d, args.threads, optimizer=True)
                    figures["optimizer_seconds"].setdefault(f"d={d}", {})[name] = round(steps[name, d]["seconds"], 5)
                m = steps[name, d]
                figures["optimizer_time_ratio"][key][name] = round(m["seconds"] / baseline, 3)
                optimizer_rows.append([n, d, name, m["seconds"], m["seconds"] / baseline, m["state_vectors"],
                                       m["step_peak_vectors"]])
                print(f"# {key} optimizer {name}: {m['seconds']:.4f} s per step, {m['seconds'] / baseline:.2f}x "
                      f"fedavg", file=sys.stderr, flush=True)
    slow = {k: [a for a, r in v.items() if r > TIME_TARGET] for k, v in figures["time_ratio"].items()}
    heavy = {k: [a for a, r in v.items() if r > MEMORY_TARGET] for k, v in figures["memory_ratio"].items()}
    figures.update(threads=args.threads or "torch default", time_target=TIME_TARGET,
                   memory_target=MEMORY_TARGET, over_time_target=slow,
                   over_memory_target=heavy)
    if optimizer_rows:
        table(["n", "d", "server optimizer", "s per step", "x fedavg aggregation", "state (d-vectors)",
               "step peak (d-vectors)"], optimizer_rows)
        print()
    report("aggregators", ["n", "d", "aggregator", "median s", "x fedavg", "peak/stack", "runs"], rows, figures)


if __name__ == "__main__":
    main()
