"""`fedsafe posthoc RUN_DIR`: the post-hoc defense again on a finished run's global adapter.

Federated training is the expensive part of an experiment and the post-hoc defense is cheap, so
comparing defense levels or tuning `posthoc.*` should not repeat the rounds. A branch is a new run
directory (under RUN_DIR/branches/ by default) whose config is the source run's with only
`posthoc.*` and `eval.*` keys changed; it copies the source's rounds and earlier evaluations
(re-evaluating after FL when an `eval.*` key changed), then runs the very code an inline run uses
(`Server.posthoc`, `Server.evaluate`). With the source's own config it reproduces the source's
post-hoc result.
"""

from __future__ import annotations

from pathlib import Path

from fedsafe import models, preflight
from fedsafe.config import ConfigError, Settings, from_run_config
from fedsafe.aggregators import get_aggregator
from fedsafe.eval.report import write_report
from fedsafe.files import read_json
from fedsafe.results import create_run_dir
from fedsafe.server import Server

BRANCHABLE = ("posthoc.", "eval.")
COPIED = ("rounds", "detection", "attack_data", "safety_probe")


def branch_settings(source: Path, overrides: dict) -> tuple[Settings, dict]:
    """The branch's settings and the source's results; a clear error before any model loads."""
    if not (source / "config.json").is_file() or not (source / "results.json").is_file():
        raise ConfigError(f"{source}: not a fedsafe run directory (needs config.json and results.json)")
    for key in overrides:
        if not key.startswith(BRANCHABLE) and key != "output-dir":
            raise ConfigError(f"{key}: a branch may change only posthoc.*, eval.* and output-dir "
                              "(anything else changes the federated training: start a new run)")
    saved = read_json(source / "config.json")
    if "posthoc.l1-source" not in saved and saved.get("posthoc.level") == "L1":
        saved["posthoc.level"] = "curated"  # a run from before the paper's levels: its "L1" is today's curated
    flat = {**saved, "resume-from": "", "output-dir": str(source / "branches"), "posthoc.enabled": True,
            **overrides}
    settings = from_run_config(flat)
    results = read_json(source / "results.json")
    if len(results.get("rounds", [])) < settings.num_server_rounds:
        raise ConfigError(f"{source}: federated training did not finish "
                          f"({len(results.get('rounds', []))} of {settings.num_server_rounds} rounds)")
    return settings, results


def final_adapter(source: Path, settings: Settings):
    path = source / "adapters" / f"round-{settings.num_server_rounds:03d}"
    if not path.is_dir():
        raise ConfigError(f"{path}: the final global adapter is missing")
    return models.load_adapter_file(path)


def run_branch(source: Path, overrides: dict) -> Path:
    """Post-hoc defense (and its evaluation) on SOURCE's final global adapter; the new run dir."""
    source = Path(source).expanduser().resolve()
    settings, results = branch_settings(source, overrides)
    preflight.check(settings)
    global_state = final_adapter(source, settings)
    run_dir = create_run_dir(settings)
    print(f"fedsafe run directory: {run_dir}", flush=True)
    server = Server(settings, run_dir, get_aggregator(settings.defense.aggregator, **settings.defense.params))
    server.recorder.set("branched_from", str(source))
    for key in COPIED:
        if key in results:
            server.recorder.set(key, results[key])
    # A key the source predates had its default then, which is what it resolves to now.
    same_eval = all(results["config"].get(k, v) == v for k, v in settings.flat.items() if k.startswith("eval."))
    for stage in ("initial", "after_fl"):
        if stage == "initial" and not settings.eval.initial:
            continue
        if same_eval and stage in results.get("eval", {}):
            server.recorder.set_eval(stage, results["eval"][stage])
        else:
            server.evaluate(stage, server.initial_state if stage == "initial" else global_state)
    if settings.posthoc.enabled:
        server.evaluate("after_posthoc", server.posthoc(global_state))
    print(f"fedsafe report: {write_report(run_dir)}", flush=True)
    return run_dir
