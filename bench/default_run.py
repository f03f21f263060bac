"""Wall time of the default experiment, `flwr run .`, stage by stage. Target: <= 5 min on 2 cores.

    . scripts/flower_env.sh && python bench/default_run.py    # runs it on FLWR_HOME's federation
    python bench/default_run.py --from RUN_DIR                 # the breakdown of a finished run
    python bench/default_run.py --run-config "num-server-rounds=2"   # overrides, as for flwr run

Inside the ServerApp, from the run's results.json: `timings` (model_load, rounds, eval, posthoc,
total; behaviour_probe and safety_probe run inside rounds), the seconds of each evaluation stage,
each round's seconds, and the attack data generation, which the server runs before round 1
outside `timings` (`attack_data.seconds`; counted only when the cached data was written during
this run, else it was read from the cache). "other" is the rest of `total`.

Around the ServerApp, timed here from the streamed output: start-up (`flwr run` starts -> the
`fedsafe run directory:` line: CLI, app packaging, SuperLink, ServerApp process and imports),
report (the end of `total` -> the `fedsafe report:` line) and shut-down (-> `flwr run` exits).
They are kept in RUN_DIR/bench-default-run.json, which --from reads; without it, start-up and
shut-down are unknown and report is estimated from file times (results.json, then report.md),
and the ratio covers the ServerApp only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common`, run as script or module
sys.path.insert(0, str(ROOT))
from common import machine, report  # noqa: E402

from fedsafe.check_run import RUN_DIR_LINE, problems  # noqa: E402

TARGET_SECONDS = 300.0  # 5 min on 2 cores
SIDECAR = "bench-default-run.json"
FLWR = Path(sys.executable).parent / "flwr"


def run(app: Path, superlink: str | None, overrides: list[str], timeout: float, log: Path) -> dict:
    """One `flwr run APP [SUPERLINK] --stream`; seconds from its start to the run-directory line,
    the report line and its exit."""
    from fedsafe.sweep import SweepError, federation

    try:
        federation(dict(os.environ), superlink)  # the same check `fedsafe sweep` makes
    except SweepError as err:
        sys.exit(f"default_run: {err}")
    command = [str(FLWR), "run", str(app), *([superlink] if superlink else []), "--stream"]
    command += [arg for item in overrides for arg in ("--run-config", item)]
    marks: dict = {"command": " ".join(command)}
    started = time.perf_counter()
    with open(log, "w", buffering=1) as out:  # line-buffered: _stop reads the run id from it
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=app)
        timer = threading.Timer(timeout, lambda: _stop(proc, log))
        timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
                now = time.perf_counter() - started
                if "run_dir" not in marks and (found := RUN_DIR_LINE.search(line)):
                    marks.update(run_dir=found.group(1), run_dir_s=now)
                    print(f"{now:7.1f} s  {line.strip()}", flush=True)
                if "fedsafe report: " in line:
                    marks["report_s"] = now
                    print(f"{now:7.1f} s  {line.strip()}", flush=True)
            proc.wait()
        finally:
            timer.cancel()
    marks["exit_s"] = time.perf_counter() - started
    marks["timed_out"] = marks["exit_s"] >= timeout
    return marks


def _stop(proc: subprocess.Popen, log: Path) -> None:
    """Past the timeout: stop `flwr run`, and the run on the SuperLink as far as its id was printed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        if ids := re.findall(r"Successfully started run (\d+)", log.read_text(errors="replace")):
            subprocess.run([str(FLWR), "stop", ids[-1]], capture_output=True, timeout=60, check=False)


def attack_seconds(results: dict, run_dir: Path) -> float:
    """Seconds this run spent generating attack data: 0 when it read them from the cache."""
    attack = results.get("attack_data") or {}
    path = Path(attack.get("path", ""))
    if not attack.get("seconds") or not path.exists():
        return 0.0
    start, end = (run_dir / "config.json").stat().st_mtime, (run_dir / "results.json").stat().st_mtime
    return float(attack["seconds"]) if start <= path.stat().st_mtime <= end else 0.0


def report_estimate(run_dir: Path) -> float | None:
    """results.json is last written when `total` is recorded, just before report.md is."""
    try:
        gap = (run_dir / "report.md").stat().st_mtime - (run_dir / "results.json").stat().st_mtime
    except OSError:
        return None
    return gap if 0 <= gap < 600 else None  # else report.md was rewritten later


def breakdown(run_dir: Path, marks: dict) -> tuple[list[list], dict]:
    """(stage, seconds or None, note) rows in run order, and the figures for the JSON line.
    `marks`: what this bench timed around the ServerApp ({} when unknown)."""
    results = json.loads((run_dir / "results.json").read_text())
    t = results.get("timings", {})
    rounds = [r["seconds"] for r in results.get("rounds", []) if isinstance(r.get("seconds"), int | float)]
    attack = attack_seconds(results, run_dir)
    total = t.get("total")
    timed = sum(t.get(k, 0.0) for k in ("model_load", "behaviour_probe_setup", "rounds", "eval", "posthoc")) + attack
    report_s = marks.get("report_s", report_estimate(run_dir))
    later = sum(rounds[1:]) / max(len(rounds) - 1, 1)
    rows = [
        ["start-up", marks.get("startup_s"), "flwr run -> run directory line: CLI, FAB, SuperLink, imports"],
        ["model_load", t.get("model_load"), "server's base model + LoRA"],
        ["attack data", attack, "generated before round 1 (0: read from the cache)"],
        *([["probe setup", t["behaviour_probe_setup"], "safety-probe: the base model's compliant answers"]]
          if "behaviour_probe_setup" in t else []),
        ["rounds", t.get("rounds"),
         f"{len(rounds)} rounds: round 1 {rounds[0]:.3g} s, later {later:.3g} s each" if rounds else ""],
        *[[f"  of which {k}", t[k], f"inside rounds: {t[k] / t['rounds']:.1%} of their wall time"]
          for k in ("behaviour_probe", "safety_probe") if k in t and t.get("rounds")],
        ["eval", t.get("eval"), "all stages"],
        *[[f"  eval {stage}", m.get("seconds"), ""] for stage, m in results.get("eval", {}).items()],
        ["posthoc", t.get("posthoc"), "defense data + fine-tuning" if "posthoc" in t else "off"],
        ["other", None if total is None else total - timed, "rest of total"],
        ["total", total, "ServerApp: results.json timings.total"],
        ["report", report_s, "timed" if "report_s" in marks else "estimated from file times"],
        ["shut-down", marks.get("shutdown_s"), "report line -> flwr run exits"],
        ["wall", marks.get("wall_s"), "flwr run start -> exit"],
    ]
    figures = {"run_dir": str(run_dir), "timings": t, "attack_data_s": attack, "rounds_s": rounds,
               "behaviour_probe_share": t["behaviour_probe"] / t["rounds"] if t.get("behaviour_probe") and t.get("rounds") else None,
               "startup_s": marks.get("startup_s"), "report_s": report_s, "shutdown_s": marks.get("shutdown_s"),
               "wall_s": marks.get("wall_s"), "total_s": total}
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="run_dir", type=Path, default=None,
                        help="print the breakdown of this finished run directory; run nothing")
    parser.add_argument("--app", type=Path, default=ROOT, help="the Flower app (default: this checkout)")
    parser.add_argument("--superlink", default=None,
                        help="connection in FLWR_HOME/config.toml (default: its default)")
    parser.add_argument("--run-config", action="append", default=[], help="passed to flwr run; repeatable")
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="seconds before the run is stopped")
    args = parser.parse_args()

    before = machine()
    if args.run_dir is not None:
        run_dir = args.run_dir.resolve()
        sidecar = run_dir / SIDECAR
        marks = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    else:
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fedsafe-bench-default-run-{os.getpid()}.log"
        print(f"flwr run {args.app} (log: {log})", flush=True)
        marks = run(args.app, args.superlink, args.run_config, args.timeout, log)
        if "run_dir" not in marks:
            sys.exit(f"default_run: the run printed no run directory; see {log}")
        run_dir = Path(marks["run_dir"])
        marks.update(startup_s=marks["run_dir_s"], wall_s=marks["exit_s"], log=str(log), machine=before)
        if "report_s" in marks:  # from the end of `total` (the run directory line comes right at its start)
            total = json.loads((run_dir / "results.json").read_text())["timings"].get("total", 0.0)
            marks.update(report_s=marks["report_s"] - marks["run_dir_s"] - total,
                         shutdown_s=marks["exit_s"] - marks["report_s"])
        (run_dir / SIDECAR).write_text(json.dumps(marks, indent=2))
    if found := problems(run_dir):
        print(f"incomplete run {run_dir}: " + "; ".join(found))

    rows, figures = breakdown(run_dir, marks)
    measured = figures["wall_s"] is not None
    span = figures["wall_s"] if measured else (figures["total_s"] or 0.0) + (figures["report_s"] or 0.0)
    ratio = span / TARGET_SECONDS
    config = json.loads((run_dir / "results.json").read_text()).get("config", {})
    during = marks.get("machine", {}).get("load_1m")
    print(f"{run_dir}\n{config.get('num-server-rounds')} rounds, {config.get('clients.per-round')} of "
          f"{config.get('clients.num')} clients x {config.get('train.local-steps')} local steps, "
          f"{config.get('attack.num-malicious')} malicious, post-hoc {config.get('posthoc.enabled')}; "
          f"{before['cores']} cores, load {machine()['load_1m']} now"
          + (f", {during} at the run's start" if during is not None else ""))
    print(f"{'wall' if measured else 'ServerApp total + report (start-up and shut-down unknown)'} {span:.0f} s; "
          f"target <= {TARGET_SECONDS:.0f} s on 2 cores: ratio {ratio:.2f}x")
    share = "% of wall" if measured else "% of total"
    report("default_run", ["stage", "seconds", share, "note"],
           [[name, "-" if sec is None else sec, "-" if sec is None else 100 * sec / span, note]
            for name, sec, note in rows], {
               **figures, "target_s": TARGET_SECONDS, "ratio": round(ratio, 2),
               "met": measured and ratio <= 1.0, "measured_wall": measured, "machine": before,
           })

if __name__ == "__main__":
    main()
