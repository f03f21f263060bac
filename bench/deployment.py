"""Seconds per FL round: a real deployment (SuperLink + SuperNodes, TLS + SuperNode auth, on
loopback) against a Ray simulation of the same run. Target: deployment <= 1.5x simulation.

    python bench/deployment.py                  # tiny random Llama (built here), 3 clients, 4 rounds
    python bench/deployment.py --model bundled --steps 10    # SmolLM2-135M 4-bit: a real round
    python bench/deployment.py --no-worker      # deployment without the node worker (a fresh
                                                # model load in every ClientApp process)

Both modes run the same `flwr run` (same run config, seed and sampled clients); the strategy
records each round's seconds (send the global adapter -> all replies in -> aggregated) in
results.json. Round 1 is reported apart: it pays one-off costs in both modes (Ray actors or node
workers start, models load). The ratio compares the mean of the later rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(ROOT))
from common import report, tiny_model  # noqa: E402

from deploy.local import LocalFederation  # noqa: E402

TARGET = 1.5


def run_config(path: Path, model: str, args, out: Path) -> Path:
    tiny = model != "smollm2-135m-instruct"
    values = {
        "model.name": model, "num-server-rounds": args.rounds, "clients.num": args.clients,
        "clients.per-round": args.clients, "clients.timeout": 600.0, "train.local-steps": args.steps,
        "train.batch-size": 2, "train.seq-length": 96 if tiny else 160, "attack.num-malicious": 0,
        "posthoc.enabled": False, "eval.safety.limit": 2, "eval.benign.limit": 2,
        "eval.max-new-tokens": 3, "eval.every-rounds": 0, "output-dir": str(out),
    }
    if tiny:
        values.update({"model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj"})
    path.write_text("".join(f'"{k}" = {json.dumps(v)}\n' for k, v in values.items()))
    return path


def measure(fed: LocalFederation, config: Path, deployed: bool, app: Path) -> list[float]:
    with fed:
        fed.start()
        if deployed:
            fed.wait_online(fed.num_nodes)
        text, run_dir = fed.run(config, timeout=3600, app=app)
    if run_dir is None or not (run_dir / "results.json").is_file():
        raise RuntimeError(f"run failed; logs in {fed.root}\n{text[-3000:]}")
    rounds = json.loads((run_dir / "results.json").read_text())["rounds"]
    failed = [f for r in rounds for f in r.get("failed", []) + r.get("dropped", [])]
    if failed:
        raise RuntimeError(f"clients failed: {failed[:3]}; logs in {fed.root}")
    return [r["seconds"] for r in rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | bundled | a local model folder")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="train.local-steps")
    parser.add_argument("--no-worker", action="store_true", help="FEDSAFE_NODE_WORKER=0 on the SuperNodes")
    parser.add_argument("--dir", type=Path, default=None, help="keep logs and runs here")
    parser.add_argument("--app", type=Path, default=ROOT, help="the Flower app to run (default: this checkout)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 1 is not compared)")

    root = args.dir or Path(tempfile.mkdtemp(prefix="fedsafe-bench-deploy-"))
    root.mkdir(parents=True, exist_ok=True)
    model = {"tiny": None, "bundled": "smollm2-135m-instruct"}.get(args.model, args.model)
    model = model or str(tiny_model(root / "tiny-model"))
    config = run_config(root / "run-config.toml", model, args, root / "runs")
    # All SuperNodes share this machine: one torch thread each, as Ray gives each client one CPU.
    node_env = {"OMP_NUM_THREADS": "1", **({"FEDSAFE_NODE_WORKER": "0"} if args.no_worker else {})}

    sim = measure(LocalFederation(root / "simulation", args.clients, simulation=True), config, False, args.app)
    dep = measure(LocalFederation(root / "deployment", args.clients, env=node_env), config, True, args.app)

    later_sim, later_dep = statistics.mean(sim[1:]), statistics.mean(dep[1:])
    ratio = later_dep / later_sim
    rows = [["simulation (Ray)", sim[0], later_sim, 1.0],
            ["deployment (TLS + auth)" + (", no worker" if args.no_worker else ""), dep[0], later_dep, ratio]]
    print(f"{args.model} model, {args.clients} clients x {args.steps} local steps, {args.rounds} rounds; "
          f"logs in {root}")
    report("deployment", ["mode", "round 1 s", "later rounds s", "ratio"], rows, {
        "model": args.model, "clients": args.clients, "steps": args.steps, "rounds": args.rounds,
        "node_worker": not args.no_worker, "simulation_round_s": round(later_sim, 2),
        "deployment_round_s": round(later_dep, 2), "ratio": round(ratio, 2), "target": TARGET,
        "simulation_rounds_s": sim, "deployment_rounds_s": dep,
    })


if __name__ == "__main__":
    main()
