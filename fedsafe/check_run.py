"""Did a `flwr run` succeed? It exits 0 even when the ServerApp fails, so look at the files.

Usage: python -m fedsafe.check_run LOG_OR_RUN_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fedsafe.files import read_json

RUN_DIR_LINE = re.compile(r"fedsafe run directory: (\S+)")


def run_dir_from(path: Path) -> Path | None:
    if path.is_dir():
        return path
    found = RUN_DIR_LINE.findall(path.read_text(errors="replace"))
    return Path(found[-1]) if found else None


def problems(run_dir: Path) -> list[str]:
    """Everything a finished run must have; empty when the run is complete."""
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        return [f"{results_path} is missing"]
    results = read_json(results_path)
    config = results["config"]
    found = []
    rounds = config["num-server-rounds"]
    if len(results.get("rounds", [])) != rounds:
        found.append(f"{len(results.get('rounds', []))} of {rounds} rounds recorded")
    trained_in = Path(results.get("branched_from", run_dir))  # a post-hoc branch reuses its source's rounds
    for r in range(1, rounds + 1):
        if not (trained_in / "adapters" / f"round-{r:03d}" / "adapter_model.safetensors").is_file():
            found.append(f"adapter of round {r} is missing")
    stages = ["initial"] * config.get("eval.initial", True) + ["after_fl"] + (["after_posthoc"] if config["posthoc.enabled"] else [])
    found += [f"eval stage {s} is missing" for s in stages if s not in results.get("eval", {})]
    if not (run_dir / "report.md").is_file():
        found.append("report.md is missing")
    return found


def summary(run_dir: Path) -> str:
    results = read_json(run_dir / "results.json")
    lines = [f"run directory: {run_dir}"]
    for stage, m in results.get("eval", {}).items():
        lines.append(f"  {stage:14s} safety {m['safety_rate']:.0%}  benign refusal {m['benign_refusal_rate']:.0%}"
                     f"  helpfulness {m['helpfulness']:.3f}")
    if "detection" in results:
        d = results["detection"]
        lines.append(f"  detection      precision {d['precision']:.2f}  recall {d['recall']:.2f}")
    lines.append(f"  wall time      {results.get('timings', {}).get('total', 0):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    run_dir = run_dir_from(Path(argv[0]))
    if run_dir is None:
        print("FAILED: the run printed no run directory (the ServerApp failed before starting; see the log)")
        return 1
    found = problems(run_dir)
    if found:
        print(f"FAILED: {run_dir}\n  " + "\n  ".join(found))
        return 1
    print(summary(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
