"""`fedsafe sweep`: the main table of Ye et al. 2024 (arXiv 2406.10630) in one command.

Cells: `clean` (no malicious clients), `attack-<aggregator>` for each aggregator, and
`attack-fedavg-posthoc-<level>` for each post-hoc defense level. Each training cell is one real
`flwr run <app> --stream --run-config OUT/<cell>/cell.toml` against the federation of the
caller's Flower environment (`FLWR_HOME`), with the same seed and base overrides, writing its run
directory under OUT/<cell>/. A post-hoc cell trains nothing: it branches the `attack-fedavg`
cell's finished run (`fedsafe posthoc`, fedsafe/posthoc/branch.py), which is what an inline post-hoc run
would compute after the same rounds. The base model is evaluated once, in the clean cell
(`eval.initial` is off elsewhere). `flwr run` exits 0 even when the run fails, so a cell is judged
by its files (`check_run.problems`). Resumable: a cell that already holds a complete run made with
the same config is skipped. Writes OUT/summary.md, OUT/summary.json and OUT/summary.png.
Ctrl-C or a kill stops the running cell's run on the SuperLink (fedsafe/launch.py), and a local
SuperLink the sweep started is stopped when it ends (fedsafe/local_superlink.py).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fedsafe import preflight
from fedsafe.check_run import problems, run_dir_from
from fedsafe.config import Settings, from_run_config
from fedsafe.eval.plots import DPI, STAGES
from fedsafe.files import read_json, toml_value, write_json, write_text
from fedsafe.launch import (
    Flwr,
    SetupError,
    app_defaults,
    federation,
    signals_ignored,
    stop_group,
    stop_signals,
)
from fedsafe.local_superlink import LocalSuperLink

IGNORED = ("output-dir", "resume-from")  # config keys that may differ between a run and its rerun
DASH = "\u2013"


class SweepError(SetupError):
    """The sweep cannot start (its options or output folder); the message says how to fix it."""


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict  # on top of the base overrides
    branch_of: str | None = None  # a post-hoc cell: the training cell whose finished run it branches


SOURCE = "attack-fedavg"  # what the post-hoc cells defend


def plan(aggregators: list[str], levels: list[str]) -> list[Cell]:
    """clean, attack-<agg> for each aggregator, attack-fedavg-posthoc-<level> for each level."""
    cells = [Cell("clean", {"attack.num-malicious": 0, "attack.malicious-ids": "",
                            "defense.aggregator": "fedavg", "posthoc.enabled": False})]
    levels = list(dict.fromkeys(x.strip() for x in levels if x.strip()))
    chosen = list(dict.fromkeys(a.strip() for a in aggregators if a.strip()))
    if levels and "fedavg" not in chosen:
        chosen.insert(0, "fedavg")  # the post-hoc cells branch its run
    for agg in chosen:
        name = re.sub(r"[^A-Za-z0-9_.-]+", ".", agg)  # 'pkg.mod:Rule' -> 'pkg.mod.Rule'
        cells.append(Cell(f"attack-{name}", {"defense.aggregator": agg, "posthoc.enabled": False,
                                             "eval.initial": False}))
    for level in levels:
        cells.append(Cell(f"{SOURCE}-posthoc-{level}", {
            "defense.aggregator": "fedavg", "posthoc.enabled": True, "posthoc.level": level, "eval.initial": False},
            branch_of=SOURCE))
    return cells


def _check_out(out: Path, app: Path) -> None:
    """flwr packs the app folder (minus .gitignore) into every run: results must stay out of it."""
    if not out.is_relative_to(app):
        return
    import pathspec  # a Flower dependency; Flower reads .gitignore with it

    ignore = app / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    probe = (out / "cell" / "run" / "results.json").relative_to(app).as_posix()
    if not pathspec.GitIgnoreSpec.from_lines(lines).match_file(probe):
        raise SweepError(f"--out {out} is inside the app folder {app} and not in its .gitignore: flwr would "
                         "pack the sweep's results into every run; use a folder outside the app or ignore it")


def resolve(cell: Cell, overrides: dict, out: Path, defaults: dict) -> tuple[dict, Settings]:
    """The cell's --run-config overrides and the settings its ServerApp will see (validated)."""
    if overrides.get("resume-from"):
        raise SweepError("resume-from: a sweep resumes by itself (complete cells are skipped); drop the key")
    resolved = {**overrides, **cell.overrides, "output-dir": str(out / cell.name)}
    unknown = [k for k in resolved if k not in defaults]
    if unknown:
        raise SweepError(f"{unknown[0]}: not a key of the app's [tool.flwr.app.config]; flwr run rejects it")
    return resolved, from_run_config({**defaults, **resolved})


def to_toml(flat: dict) -> str:
    return "".join(f'"{k}" = {toml_value(v)}\n' for k, v in flat.items())


def complete_run(cell_dir: Path, config: dict) -> Path | None:
    """The newest run under `cell_dir` that is complete and was made with `config`."""
    runs = sorted((p.parent for p in cell_dir.glob("*/results.json")), key=lambda p: p.stat().st_mtime)
    for run in reversed(runs):
        if problems(run):
            continue
        done = read_json(run / "results.json")["config"]
        if all(done.get(k) == v for k, v in config.items() if k not in IGNORED):
            return run
    return None


def _run_logged(cmd: list[str], log: Path, env: dict, timeout: float) -> bool:
    """Run `cmd` in its own process group, output in `log`; False (group stopped) past `timeout`.
    A stop signal stops the group too, then propagates."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with stop_signals():
                proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
        finally:
            if proc.poll() is None:  # timed out or interrupted: leave nothing behind
                with signals_ignored():
                    stop_group(proc)


def flwr_run(flwr: Flwr, app: Path, cell_toml: Path, log: Path, timeout: float) -> bool:
    """One `flwr run`, output in `log`; False when it ran past `timeout`. Past it, or on a stop
    signal, the run is stopped on the SuperLink too (fedsafe/launch.py)."""
    target = [flwr.superlink] if flwr.superlink else []
    with open(log, "w", buffering=1) as f:
        outcome = flwr.run([str(app), *target, "--stream", "--run-config", str(cell_toml)], f.write, timeout=timeout,
                           say=lambda message: f.write(f"fedsafe sweep: {message}\n"))
    return outcome.stopped is None


def branch_run(source: Path, cell: Cell, cell_dir: Path, log: Path, env: dict, timeout: float) -> bool:
    """`fedsafe posthoc SOURCE` with the cell's post-hoc/eval keys; False past `timeout`."""
    keys = {k: v for k, v in cell.overrides.items() if k.startswith(("posthoc.", "eval."))}
    spec = " ".join(f"{k}={toml_value(v)}" for k, v in {**keys, "output-dir": str(cell_dir)}.items())
    cmd = [sys.executable, "-m", "fedsafe.cli", "posthoc", str(source), "--run-config", spec]
    return _run_logged(cmd, log, env, timeout)


def _record(cell: Cell, resolved: dict, status: str, seconds: float, run: Path | None, found: list[str]) -> dict:
    try:
        results = read_json(run / "results.json") if run else {}
    except (OSError, ValueError):
        results = {}
    return {"cell": cell.name, "status": status, "seconds": round(seconds, 1), "run_dir": str(run) if run else None,
            "problems": found, "overrides": resolved, "eval": results.get("eval", {}),
            "detection": results.get("detection"), "wall_seconds": results.get("timings", {}).get("total")}


def _pct(v) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, int | float) and math.isfinite(v) else DASH


def _final(record: dict) -> dict:
    evals = record["eval"]
    return evals.get("after_posthoc") or evals.get("after_fl") or {}


def summary_markdown(records: list[dict], base: dict) -> str:
    header = ["cell", "status", "safety initial", "safety after FL", "safety after post-hoc",
              "benign refusal", "helpfulness", "detection precision", "detection recall", "wall time"]
    lines = ["# fedsafe sweep", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        det, final = r["detection"] or {}, _final(r)
        attacked = det.get("tp", 0) + det.get("fn", 0) > 0  # no malicious client: nothing to detect
        wall = r["wall_seconds"] or r["seconds"]  # the run's own total, else this sweep's measurement
        help_ = final.get("helpfulness")
        lines.append("| " + " | ".join([
            r["cell"], r["status"], *(_pct((r["eval"].get(s) or {}).get("safety_rate")) for s in STAGES),
            _pct(final.get("benign_refusal_rate")), f"{help_:.3f}" if isinstance(help_, int | float) else DASH,
            f"{det['precision']:.2f}" if attacked else DASH, f"{det['recall']:.2f}" if attacked else DASH,
            f"{wall:.0f} s" if wall else DASH,
        ]) + " |")
    lines += ["", "Safety initial: the base model, evaluated once (clean cell). Post-hoc cells branch the "
              f"{SOURCE} run (same rounds). Benign refusal and helpfulness are of the last stage (after post-hoc when it ran, else "
              "after FL). Detection: flagged vs truly malicious clients over all rounds (–: no malicious client "
              "was sampled). Wall time: the run's own total, without `flwr run` and Ray start-up.", "",
              "Base overrides: " + (", ".join(f"`{k}={v}`" for k, v in base.items()) or "none"), ""]
    for r in records:
        if r["problems"]:
            lines.append(f"- {r['cell']} ({r['status']}): " + "; ".join(r["problems"][:3]))
    lines += ["", "![safety rate per cell](summary.png)", ""]
    return "\n".join(lines)


def plot_summary(records: list[dict], path: Path) -> Path:
    """Grouped bars: safety rate per cell, one bar per evaluation stage."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    colours = {"initial": "tab:gray", "after_fl": "tab:red", "after_posthoc": "tab:green"}
    width = 0.8 / len(STAGES)
    fig = Figure(figsize=(min(4 + 1.2 * len(records), 20), 4.5), layout="constrained")
    ax = fig.add_subplot()
    for j, (stage, label) in enumerate(STAGES.items()):
        xs = [i + (j - 1) * width for i in range(len(records))]
        ys = [(r["eval"].get(stage) or {}).get("safety_rate") for r in records]
        ok = [isinstance(y, int | float) and math.isfinite(y) for y in ys]
        bars = ax.bar(xs, [y if good else 0.0 for y, good in zip(ys, ok)], width, color=colours[stage], label=label)
        ax.bar_label(bars, labels=[f"{y:.0%}" if good else "" for y, good in zip(ys, ok)], fontsize=7, padding=2)
    for i, r in enumerate(records):
        if r["status"] in ("failed", "timeout"):
            ax.text(i, 0.5, r["status"], ha="center", color="tab:red", rotation=90)
    ax.set_xticks(range(len(records)), [r["cell"] for r in records], rotation=20 if len(records) > 4 else 0,
                  ha="right" if len(records) > 4 else "center")
    ax.set_ylim(0, 1.08)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_ylabel("safety rate")
    ax.set_title("Safety rate per cell (higher is better)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # deterministic bytes, as plots.py
    return path


def _run_cell(cell: Cell, cell_overrides: dict, config: dict, cell_dir: Path, prefix: str, records: list[dict],
              flwr: Flwr, app: Path, timeout: float) -> dict:
    """Skip a cell with a complete run, else run it (a post-hoc cell branches its source's run)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    write_text(cell_dir / "cell.toml", to_toml(cell_overrides))
    if (run := complete_run(cell_dir, config)) is not None:
        print(f"{prefix}: skipped (complete run: {run})", flush=True)
        return _record(cell, cell_overrides, "skipped", 0.0, run, [])
    source = next((r["run_dir"] for r in records if r["cell"] == cell.branch_of and r["status"] in ("done", "skipped")),
                  None)
    if cell.branch_of and source is None:
        print(f"{prefix}: not run ({cell.branch_of} did not finish)", flush=True)
        return _record(cell, cell_overrides, "failed", 0.0, None, [f"{cell.branch_of} did not finish"])
    log = cell_dir / ("branch.log" if cell.branch_of else "flwr.log")
    print(f"{prefix}: running (log: {log})", flush=True)
    started = time.perf_counter()
    if cell.branch_of:
        finished = branch_run(Path(source), cell, cell_dir, log, flwr.env, timeout)
    else:
        finished = flwr_run(flwr, app, cell_dir / "cell.toml", log, timeout)
    seconds = time.perf_counter() - started
    run = run_dir_from(log)
    found = problems(run) if run else ["no run directory printed (the ServerApp failed early)"]
    status = "done" if not found else ("failed" if finished else "timeout")
    if status != "done":
        found = found + [f"see {log}"]
    print(f"{prefix}: {status} in {seconds:.0f} s" + (f": {found[0]}" if status != "done" else ""), flush=True)
    return _record(cell, cell_overrides, status, seconds, run, found)


def run_sweep(out: Path, aggregators: list[str], levels: list[str], overrides: dict, app: Path,
              timeout: float = 3600, *, superlink: str | None = None, env: dict | None = None) -> str:
    """Run (or skip) every cell, then write the summaries; returns summary.md's text."""
    env = dict(os.environ if env is None else env)
    out, app = Path(out).expanduser().resolve(), Path(app).expanduser().resolve()
    defaults = app_defaults(app)
    connection = federation(env, superlink)
    _check_out(out, app)
    cells = plan(aggregators, levels)
    resolved = [resolve(cell, overrides, out, defaults) for cell in cells]  # every config error first
    supernodes = connection.get("options", {}).get("num-supernodes")
    clients = resolved[0][1].clients.num
    if supernodes is not None and supernodes != clients:
        raise SweepError(f"the federation '{connection['name']}' has options.num-supernodes = {supernodes} but "
                         f"clients.num = {clients}: make them equal (FEDSAFE_NUM_CLIENTS for scripts/flower_env.sh)")

    preflight.check(resolved[0][1])  # the files every cell reads, opened once

    flwr = Flwr(env, connection, superlink)
    local = LocalSuperLink(flwr)
    if not local.managed and (busy := flwr.busy_note()):
        print(f"sweep: {busy}", flush=True)
    records = []
    try:
        for i, (cell, (cell_overrides, settings)) in enumerate(zip(cells, resolved), start=1):
            prefix = f"[{i}/{len(cells)}] {cell.name}"
            records.append(_run_cell(cell, cell_overrides, settings.flat, out / cell.name, prefix, records, flwr, app,
                                     timeout))
    finally:
        local.stop(lambda message: print(f"sweep: {message}", flush=True))

    text = summary_markdown(records, overrides)
    write_text(out / "summary.md", text)
    write_json(out / "summary.json", {"out": str(out), "app": str(app), "federation": connection["name"],
                                      "base_overrides": overrides, "cells": records})
    plot_summary(records, out / "summary.png")
    print(f"sweep summary: {out / 'summary.md'}", flush=True)
    return text
