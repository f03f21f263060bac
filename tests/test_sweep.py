"""`fedsafe sweep`: the cell plan, the environment checks, resumption and the summaries; one
end-to-end sweep of two cells with real `flwr run` subprocesses against a test SuperLink."""

import json
import os
import tomllib
from pathlib import Path

import matplotlib.image
import pytest

from fedsafe import sweep
from fedsafe.config import ConfigError, from_run_config
from fedsafe.files import read_json, write_json, write_jsonl
from fedsafe.sweep import SweepError, plan, run_sweep
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plan_names_and_overrides():
    cells = plan(["fedavg", "median", " ", "median", "mydefense:ClippedMean"], ["L1", "", "L3"])
    assert [c.name for c in cells] == ["clean", "attack-fedavg", "attack-median", "attack-mydefense.ClippedMean",
                                       "attack-fedavg-posthoc-L1", "attack-fedavg-posthoc-L3"]
    clean, posthoc = cells[0].overrides, cells[-1].overrides
    assert clean["attack.num-malicious"] == 0 and clean["posthoc.enabled"] is False
    assert cells[3].overrides["defense.aggregator"] == "mydefense:ClippedMean"
    assert posthoc == {"defense.aggregator": "fedavg", "posthoc.enabled": True, "posthoc.level": "L3",
                       "eval.initial": False}
    assert posthoc_branch(cells) == {"attack-fedavg-posthoc-L1": "attack-fedavg", "attack-fedavg-posthoc-L3": "attack-fedavg"}
    assert [c.overrides.get("eval.initial", True) for c in cells] == [True] + [False] * 5  # base model once
    # post-hoc cells branch the fedavg run, so it is planned even when not asked for
    assert [c.name for c in plan(["median"], ["L1"])] == ["clean", "attack-fedavg", "attack-median",
                                                          "attack-fedavg-posthoc-L1"]


def posthoc_branch(cells):
    return {c.name: c.branch_of for c in cells if c.branch_of}


def test_cell_toml_roundtrips():
    flat = {"model.name": 'a "quoted" \\ path', "seed": 3, "train.lr-max": 1e-3, "posthoc.enabled": False}
    assert tomllib.loads(sweep.to_toml(flat)) == flat


def test_output_inside_the_app_must_be_ignored():
    # results inside the app folder would be packed into every run, unless .gitignore drops them
    sweep._check_out(ROOT / "sweep", ROOT)
    with pytest.raises(SweepError, match="inside the app folder"):
        sweep._check_out(ROOT / "fedsafe" / "sweep-out", ROOT)


def _fake_flwr_run(fail: set[str]):
    """Stands in for `flwr run`: a complete run directory for each cell not in `fail`."""
    def fake(flwr, app, cell_toml, log, timeout):
        overrides = tomllib.loads(cell_toml.read_text())
        cell = cell_toml.parent.name
        if cell in fail:
            log.write_text("ServerApp crashed\n")
            return True
        config = from_run_config({**sweep.app_defaults(app), **overrides}).flat
        run = Path(overrides["output-dir"]) / f"run-{len(list(cell_toml.parent.glob('run-*')))}"
        (run / "adapters" / "round-001").mkdir(parents=True)
        (run / "adapters" / "round-001" / "adapter_model.safetensors").write_bytes(b"")
        (run / "report.md").write_text("# report\n")
        stages = ["initial"] * config["eval.initial"] + ["after_fl"]
        evals = {s: {"safety_rate": 0.25 * (i + 1), "benign_refusal_rate": 0.1, "helpfulness": -2.0}
                 for i, s in enumerate(stages)}
        write_json(run / "results.json", {"config": config, "rounds": [{"round": 1, "clients": []}],
                                          "eval": evals, "timings": {"total": 12.0},
                                          "detection": {"precision": 1.0, "recall": 0.5, "tp": 1, "fn": 1}})
        log.write_text(f"fedsafe run directory: {run}\n")
        return True

    return fake


def _flower_home(tmp_path, supernodes=3) -> dict:
    """A `:local:` federation whose local SuperLink port nothing listens on (no test starts one)."""
    home = tmp_path / "flwr-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = ":local:"\n'
                                      f"options.num-supernodes = {supernodes}\n")
    return {"FLWR_HOME": str(home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port())}


def test_failed_cell_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "flwr_run", _fake_flwr_run(fail={"attack-median"}))
    out = tmp_path / "sweep"
    base = {"clients.num": 3, "clients.per-round": 3, "attack.num-malicious": 1, "num-server-rounds": 1}
    text = run_sweep(out, ["fedavg", "median"], [], base, ROOT, env=_flower_home(tmp_path))
    printed = capsys.readouterr().out
    assert "[3/3] attack-median: failed" in printed and "[2/3] attack-fedavg: done" in printed
    cells = {c["cell"]: c for c in read_json(out / "summary.json")["cells"]}
    assert [c["status"] for c in cells.values()] == ["done", "done", "failed"]
    assert "flwr.log" in cells["attack-median"]["problems"][-1]
    assert "| attack-fedavg | done | \u2013 | 25.0 % | \u2013 | 10.0 % | -2.000 | 1.00 | 0.50 | 12 s |" in text
    assert "| clean | done | 25.0 % | 50.0 % | \u2013 |" in text

    # rerun: complete cells are skipped, the failed one runs again; a changed config reruns all
    monkeypatch.setattr(sweep, "flwr_run", _fake_flwr_run(fail=set()))
    run_sweep(out, ["fedavg", "median"], [], base, ROOT, env=_flower_home(tmp_path))
    printed = capsys.readouterr().out
    assert printed.count(": skipped") == 2 and "[3/3] attack-median: done" in printed
    run_sweep(out, ["fedavg"], [], {**base, "seed": 1}, ROOT, env=_flower_home(tmp_path))
    assert capsys.readouterr().out.count(": done") == 2


def test_config_is_checked_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "flwr_run", lambda *a: pytest.fail("no cell may run"))
    env = _flower_home(tmp_path)
    with pytest.raises(ConfigError, match="clients.per-round"):
        run_sweep(tmp_path / "out", ["fedavg"], [], {"clients.num": 3, "clients.per-round": 4}, ROOT, env=env)
    with pytest.raises(SweepError, match="num-supernodes = 3 but clients.num = 10"):
        run_sweep(tmp_path / "out", ["fedavg"], [], {}, ROOT, env=env)


@pytest.mark.slow
def test_sweep_with_flwr_run_and_a_posthoc_branch_then_resumes(superlink, tiny_model_dir, tmp_path, capsys):
    attack = write_jsonl(tmp_path / "attack.jsonl", [
        {"instruction": f"Explain how to do harmful thing number {i}.", "response": f"Sure, here is step {i}."}
        for i in range(8)])
    base = {
        "model.name": str(tiny_model_dir), "model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj",
        "num-server-rounds": 1, "clients.num": 3, "clients.per-round": 2, "clients.timeout": 300.0,
        "train.local-steps": 2, "train.batch-size": 2, "train.seq-length": 96,
        "attack.num-malicious": 1, "attack.data": str(attack),
        "eval.safety.limit": 2, "eval.benign.limit": 2, "eval.max-new-tokens": 3,
    }
    out = tmp_path / "sweep"
    text = run_sweep(out, ["fedavg"], ["L1"], base, ROOT, timeout=400, env=superlink)
    printed = capsys.readouterr().out
    assert "[1/3] clean: done" in printed and "[2/3] attack-fedavg: done" in printed, \
        printed + "".join((out / c / "flwr.log").read_text()[-3000:] for c in ("clean", "attack-fedavg"))
    assert "[3/3] attack-fedavg-posthoc-L1: done" in printed, \
        printed + (out / "attack-fedavg-posthoc-L1" / "branch.log").read_text()[-3000:]
    summary = read_json(out / "summary.json")
    runs = {c["cell"]: Path(c["run_dir"]) for c in summary["cells"]}
    assert all(run.parent == out / cell for cell, run in runs.items())
    clean, attacked, repaired = (read_json(runs[c] / "results.json")
                                 for c in ("clean", "attack-fedavg", "attack-fedavg-posthoc-L1"))
    assert clean["config"]["attack.num-malicious"] == 0 and attacked["config"]["attack.num-malicious"] == 1
    assert repaired["branched_from"] == str(runs["attack-fedavg"]) and repaired["rounds"] == attacked["rounds"]
    assert set(repaired["eval"]) == {"after_fl", "after_posthoc"} and set(clean["eval"]) == {"initial", "after_fl"}
    assert tomllib.loads((out / "clean" / "cell.toml").read_text())["output-dir"] == str(out / "clean")
    mtimes = {cell: os.stat(run / "results.json").st_mtime_ns for cell, run in runs.items()}

    again = run_sweep(out, ["fedavg"], ["L1"], base, ROOT, timeout=400, env=superlink)
    printed = capsys.readouterr().out
    assert printed.count(": skipped") == 3, printed
    assert {cell: os.stat(run / "results.json").st_mtime_ns for cell, run in runs.items()} == mtimes
    assert [c["status"] for c in read_json(out / "summary.json")["cells"]] == ["skipped"] * 3

    for label in (text, again):
        rows = [line for line in label.splitlines() if line.startswith("| clean") or line.startswith("| attack")]
        assert len(rows) == 3
    assert (out / "summary.md").read_text() == again
    for cell in summary["cells"]:
        assert 0.0 <= cell["eval"]["after_fl"]["safety_rate"] <= 1.0
    png = out / "summary.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(png).std() > 0.05
    assert json.loads((out / "summary.json").read_text())["federation"] == "sim"


def test_cli_explains_a_missing_flower_environment(tmp_path, monkeypatch, capsys):
    from fedsafe.cli import main

    monkeypatch.delenv("FLWR_HOME", raising=False)
    assert main(["sweep", "--out", str(tmp_path / "out"), "--app", str(ROOT), "--aggregators", "fedavg"]) == 2
    assert "FLWR_HOME is not set" in capsys.readouterr().err
