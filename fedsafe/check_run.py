"""Did a `flwr run` succeed? It exits 0 even when the ServerApp fails, so look at the files;
print the run's one-line summary (fedsafe.eval.report.summary_line), or what is missing.

Usage: python -m fedsafe.check_run LOG_OR_RUN_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fedsafe.eval.report import summary_line
from fedsafe.files import read_json

RUN_DIR_LINE = re.compile(r"fedsafe run directory: (\S+)")
ERROR_LINE = re.compile(r"fedsafe: error: (.*)")


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
    try:
        return _missing(run_dir, read_json(results_path))
    except (KeyError, TypeError, ValueError, OSError) as err:  # a half-written or foreign results.json
        return [f"{results_path} is unreadable: {err!r}"]


def _missing(run_dir: Path, results: dict) -> list[str]:
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


def verdict(text: str, where: str) -> tuple[int, str]:
    """(exit code, one line or a FAILED list) for a run's output `text`; `where` names its log."""
    found = RUN_DIR_LINE.findall(text)
    if not found:
        errors = ERROR_LINE.findall(text)
        why = errors[-1].strip() if errors else "the ServerApp failed before starting"
        return 1, f"FAILED: the run printed no run directory: {why} (see {where})"
    return judge(Path(found[-1]), where)


def judge(run_dir: Path, where: str) -> tuple[int, str]:
    """(exit code, one line or a FAILED list) for a run directory; `where` names its log."""
    missing = problems(run_dir)
    if missing:
        return 1, f"FAILED: {run_dir}\n  " + "\n  ".join(missing) + f"\n  (see {where})"
    return 0, f"OK: {summary_line(read_json(run_dir / 'results.json'), run_dir / 'report.md')}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    path = Path(argv[0])
    code, line = judge(path, str(path)) if path.is_dir() else verdict(path.read_text(errors="replace"), str(path))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
