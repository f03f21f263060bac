"""Seconds per FL round: fedsafe's Flower + Ray simulation against the same training in a plain
sequential loop in one process (OpenFedLLM style). Target: simulation <= 1.0x sequential.

    python bench/round.py                          # tiny random Llama, 4 clients x 8 steps, 3 rounds
    python bench/round.py --model bundled          # SmolLM2-135M 4-bit: a default-experiment round
    python bench/round.py --clients 2 --steps 2    # quicker

Simulation: a real `flwr run` of this app on a simulation SuperLink (deploy/local.py), with
clients.num = clients.per-round = --clients SuperNodes and 1 CPU per client in
FLWR_HOME/config.toml, as scripts/flower_env.sh writes it: Ray runs as many clients at once as
there are cores, each with one torch thread. A round's seconds (send the global adapter -> all
replies in -> aggregated) come from results.json `rounds[i].seconds`.

Sequential: this process, clients one after another through `fedsafe.client.train_locally` on the
settings parsed from the same run config (same sampled clients, learning rate and seeds), then
FedAvg weighted by examples. One model is loaded before round 1 and kept for every round, as
OpenFedLLM does (it never reloads per round). It runs once per --threads value (default: 1 torch
thread, then one per core) and the ratio takes the faster: on a CPU shared with other busy
processes, multi-threaded torch waits for descheduled threads (a tiny-model round 10-30x slower
with 2 threads than with 1 at load 10 on 2 cores), and a crippled baseline flatters fedsafe.
The later thread counts reuse the loaded model and tokenized data: their round 1 is cheaper.

Round 1 is reported apart: it pays one-off costs (Ray start and one model load per actor in the
simulation; tokenizing each client's data in both). The ratio compares the mean of the later
rounds. The final adapters of both are compared, as a check that they trained the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(ROOT))
from common import machine, report, tiny_model  # noqa: E402

from deploy.local import LocalFederation  # noqa: E402
from fedsafe.config import BUNDLED_MODEL as BUNDLED  # noqa: E402

TARGET = 1.0


def run_config(path: Path, model: str, args, out: Path) -> dict:
    """The app's defaults except: K clients all sampled each round, S local steps, no attack and
    no post-hoc, 2-prompt evaluations. Tiny model: LoRA r=4 on q,v and 96 tokens, as the tests."""
    values = {
        "model.name": model, "num-server-rounds": args.rounds, "clients.num": args.clients,
        "clients.per-round": args.clients, "clients.timeout": 600.0, "train.local-steps": args.steps,
        "attack.num-malicious": 0, "posthoc.enabled": False, "eval.safety.limit": 2,
        "eval.benign.limit": 2, "eval.max-new-tokens": 3, "eval.every-rounds": 0, "output-dir": str(out),
    }
    if model != BUNDLED:
        values.update({"model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj", "train.seq-length": 96})
    path.write_text("".join(f'"{k}" = {json.dumps(v)}\n' for k, v in values.items()))
    return tomllib.loads(path.read_text())  # exactly what flwr reads from the file


def simulation(root: Path, clients: int, config: Path) -> tuple[list[float], Path]:
    """One `flwr run` on a simulation SuperLink; each round's seconds, and the run directory."""
    with LocalFederation(root, clients, simulation=True) as fed:
        fed.start()
        text, run_dir = fed.run(config, timeout=3600)
    if run_dir is None or not (run_dir / "results.json").is_file():
        raise RuntimeError(f"run failed; logs in {root}\n{text[-3000:]}")
    rounds = json.loads((run_dir / "results.json").read_text())["rounds"]
    failed = [f for r in rounds for f in r.get("failed", []) + r.get("dropped", [])]
    if failed:
        raise RuntimeError(f"clients failed: {failed[:3]}; logs in {root}")
    return [r["seconds"] for r in rounds], run_dir


def sequential(values: dict, threads: int) -> tuple[float, list[float], dict]:
    """Model load seconds, each round's seconds, and the final global adapter."""
    import torch

    from fedsafe import models
    from fedsafe.client import train_locally
    from fedsafe.config import from_run_config
    from fedsafe.federation.sampling import sample_partitions

    if threads:
        torch.set_num_threads(threads)
    settings = from_run_config(values)
    started = time.perf_counter()
    models.cached_lora_model(settings.model, settings.seed)  # the one model, kept for every round
    load = time.perf_counter() - started
    state = models.initial_adapter(settings.model, settings.seed)
    seconds = []
    for server_round in range(1, settings.num_server_rounds + 1):
        started = time.perf_counter()
        chosen = sample_partitions(range(settings.clients.num), settings.clients.per_round, settings.seed,
                                   server_round, settings.attack.malicious_ids, settings.clients.sampling)
        lr = settings.train.lr(server_round, settings.num_server_rounds)
        updates = [train_locally(settings, p, state, server_round, lr) for p in chosen]
        flat = models.flatten(state)  # (d,)
        deltas = torch.stack([models.flatten(u.state) - flat for u in updates])  # (k, d)
        weights = torch.tensor([float(u.num_examples) for u in updates])  # (k,)
        state = models.unflatten(flat + weights @ deltas / weights.sum(), state)
        seconds.append(time.perf_counter() - started)
    return load, seconds, state


def adapter_gap(run_dir: Path, rounds: int, state: dict) -> tuple[float, float]:
    """Max |simulation - sequential| over the final adapters, and the sequential adapter's norm."""
    from fedsafe import models

    sim = models.load_adapter_file(run_dir / "adapters" / f"round-{rounds:03d}")
    gap = max(float((sim[k] - state[k]).abs().max()) for k in state)
    return gap, float(models.flatten(state).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | bundled | a local model folder")
    parser.add_argument("--clients", type=int, default=4, help="K: SuperNodes, all sampled every round")
    parser.add_argument("--steps", type=int, default=8, help="S: train.local-steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="torch thread counts for the sequential loop, comma-separated (default 1,cores)")
    parser.add_argument("--dir", type=Path, default=None, help="keep logs and runs here")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 is not compared)")

    root = args.dir or Path(tempfile.mkdtemp(prefix="fedsafe-bench-round-"))
    root.mkdir(parents=True, exist_ok=True)
    model = {"tiny": None, "bundled": BUNDLED}.get(args.model, args.model)
    model = model or str(tiny_model(root / "tiny-model"))
    before = machine()
    config = root / "run-config.toml"
    values = run_config(config, model, args, root / "runs")

    sim, run_dir = simulation(root / "simulation", args.clients, config)
    threads = list(dict.fromkeys(int(t) for t in args.threads.split(",")))
    seq = {t: sequential(values, t) for t in threads}  # threads -> (load s, rounds s, final adapter)

    later_sim = statistics.mean(sim[1:])
    later = {t: statistics.mean(rounds[1:]) for t, (_, rounds, _) in seq.items()}
    best = min(later, key=later.get)
    ratio = later_sim / later[best]
    gap, norm = adapter_gap(run_dir, args.rounds, seq[best][2])
    rows = [["fedsafe (flwr run, Ray)", sim[0], later_sim, ratio]]
    rows += [[f"sequential, {t} thread{'s' * (t > 1)}", rounds[0], later[t], later[t] / later[best]]
             for t, (_, rounds, _) in seq.items()]
    after = machine()
    print(f"{args.model} model, {args.clients} clients x {args.steps} local steps, {args.rounds} rounds; "
          f"sequential: one model, loaded once before round 1 ({seq[threads[0]][0]:.1f} s); "
          f"{after['cores']} cores, load {before['load_1m']} -> {after['load_1m']}; logs in {root}")
    print(f"final adapters: max |fedsafe - sequential| = {gap:.2e} (adapter norm {norm:.3g}); "
          f"ratio fedsafe / fastest sequential {ratio:.2f}x (target <= {TARGET:.1f}x)")
    report("round", ["mode", "round 1 s", "later rounds s", "ratio"], rows, {
        "model": args.model, "clients": args.clients, "steps": args.steps, "rounds": args.rounds,
        "simulation_round_s": round(later_sim, 2), "sequential_round_s": round(later[best], 2),
        "sequential_threads": best, "ratio": round(ratio, 2), "target": TARGET, "met": ratio <= TARGET,
        "simulation_rounds_s": sim,
        "sequential_rounds_s": {t: [round(x, 2) for x in rounds] for t, (_, rounds, _) in seq.items()},
        "sequential_load_s": round(seq[threads[0]][0], 2), "adapter_max_abs_diff": gap,
        "machine": after, "load_before": before["load_1m"],
    })

if __name__ == "__main__":
    main()
