"""Server optimizers' step cost: each registered optimizer (fedsafe.optimizers, applied after the
aggregator each round) steps on (d,) fp32 vectors as the strategy calls it (`apply_optimizer`), in
a fresh subprocess per (optimizer, d). Prints the median seconds per step, the state it keeps
between rounds and the step's transient peak, both in d-vectors; the last line is JSON.

    python bench/optimizers.py                      # d = 16.8M (LoRA r=16 on q,k,v,o of a 7B model)
    python bench/optimizers.py --quick --optimizers fedadam

fedavgm runs with server_momentum 0.9 (at its default 0 it is sgd).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fedsafe, in workers too
from common import current_rss_mb, peak_rss_mb, report, reset_peak_rss, timeit  # noqa: E402

OPTIMIZER_PARAMS = {"fedavgm": {"server_momentum": 0.9}}  # the bench's settings where a default does nothing


def worker(name: str, d: int, threads: int | None) -> dict:
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


def measure(name: str, d: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--d", str(d)]
    cmd += ["--threads", str(threads)] if threads else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d in {100k, 1M} instead of 16.8M")
    parser.add_argument("--d", type=lambda s: [int(float(v)) for v in s.split(",")], default=None)
    parser.add_argument("--optimizers", type=lambda s: [v for v in s.split(",") if v], default=None,
                        help="comma-separated server optimizers (default: every registered one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.d[0], args.threads)))
        return

    from fedsafe.optimizers import available

    dims = args.d or ([100_000, 1_000_000] if args.quick else [16_777_216])
    rows, figures = [], {"seconds_per_step": {}}
    for d in dims:
        for name in args.optimizers or available():
            m = measure(name, d, args.threads)
            figures["seconds_per_step"].setdefault(f"d={d}", {})[name] = round(m["seconds"], 5)
            rows.append([d, name, m["seconds"], m["state_vectors"], m["step_peak_vectors"]])
    report("optimizers", ["d", "server optimizer", "s per step", "state (d-vectors)", "step peak (d-vectors)"],
           rows, figures)


if __name__ == "__main__":
    main()
