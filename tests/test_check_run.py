"""fedsafe.check_run: a run judged by its files (`flwr run` exits 0 even when the ServerApp
fails), ending with the run's one-line summary or what is missing."""

import json
import shutil
from pathlib import Path

from fedsafe import check_run
from fedsafe.eval.report import summary_line

FIXTURE = Path(__file__).parent / "eval" / "results_fixture.json"


def complete_run(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    results = json.loads(FIXTURE.read_text())
    shutil.copy(FIXTURE, run / "results.json")
    for r in range(1, results["config"]["num-server-rounds"] + 1):
        (run / "adapters" / f"round-{r:03d}").mkdir(parents=True)
        (run / "adapters" / f"round-{r:03d}" / "adapter_model.safetensors").write_bytes(b"")
    (run / "report.md").write_text("# report\n")
    return run


def test_a_complete_run_ends_with_its_summary_line(tmp_path, capsys):
    run = complete_run(tmp_path)
    log = tmp_path / "flwr.log"
    log.write_text(f"noise\nfedsafe run directory: {run}\nmore noise\n")
    assert check_run.main([str(log)]) == 0
    summary = summary_line(json.loads(FIXTURE.read_text()), run / "report.md")
    assert capsys.readouterr().out == f"OK: {summary}\n"
    assert check_run.main([str(run)]) == 0  # a run directory works as well


def test_a_failed_run_says_why(tmp_path, capsys):
    log = tmp_path / "flwr.log"
    log.write_text("Successfully started run 1\nfedsafe: error: data.benign='x.csv': x.csv has no rows\nTraceback ...\n")
    assert check_run.main([str(log)]) == 1
    assert capsys.readouterr().out == (f"FAILED: the run printed no run directory: data.benign='x.csv': x.csv has no "
                                       f"rows (see {log})\n")
    run = complete_run(tmp_path)
    (run / "report.md").unlink()
    log.write_text(f"fedsafe run directory: {run}\n")
    assert check_run.main([str(log)]) == 1
    assert "report.md is missing" in capsys.readouterr().out


def test_a_half_written_results_file_is_a_failed_run_not_a_traceback(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{}")  # no config yet
    assert check_run.main([str(tmp_path)]) == 1
    assert "results.json is unreadable: KeyError('config')" in capsys.readouterr().out


def test_deploy_local_imports_only_what_check_run_has():
    """deploy/local.py imports check_run inside main(), after the federation ran: a missing name
    would fail only then."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "deploy" / "local.py").read_text())
    names = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "fedsafe.check_run" for a in node.names]
    assert names and all(hasattr(check_run, n) for n in names)
