"""Runs that end with their command (fedsafe/launch.py, fedsafe/local_superlink.py,
fedsafe/run_command.py), on real processes: `fedsafe run` in a child process, stopped by a real
signal to its PID, against a stand-in for the flwr CLI that does what flwr 1.42 does around a
run: prints the run id, starts a detached `flower-superlink` logging to FLWR_HOME, streams lines,
answers `flwr list --format json` and records `flwr stop RUN_ID`. Running a real federation is
tests/test_flwr_run.py's part."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fedsafe.launch import Flwr, SetupError, federation
from fedsafe.local_superlink import LocalSuperLink
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]

FAKE_FLWR = """\
import json, os, subprocess, sys, time
from pathlib import Path

d = Path(os.environ["FAKE_FLWR_DIR"])
command = sys.argv[1]
if command == "list":
    runs = json.loads((d / "runs.json").read_text()) if (d / "runs.json").exists() else []
    print(json.dumps({"success": True, "runs": runs}))
elif command == "stop":
    (d / "stopped").write_text(sys.argv[2])
elif command == "run":
    (d / "run.pid").write_text(str(os.getpid()))
    log = Path(os.environ["FLWR_HOME"]) / "local-superlink" / "superlink.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    link = subprocess.Popen([str(d / "flower-superlink"), "--insecure", "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    (d / "superlink.pid").write_text(str(link.pid))
    print("Successfully started run 42", flush=True)
    print("Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.", flush=True)
    print("fedsafe progress: after_fl harmful: 32/140 prompts, 3.2 prompts/s, 34 s left", flush=True)
    time.sleep(float(os.environ.get("FAKE_RUN_SECONDS", "600")))
    print("fedsafe: error: a ServerApp error line", flush=True)
"""


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake(tmp_path):
    """(env, fake flwr CLI, folder of its records) for a `:local:` federation in tmp_path."""
    d = tmp_path / "fake"
    d.mkdir()
    # Like a real SuperLink, it runs a child (the simulation); its PID goes to LOG.<pid>.child.
    _script(d / "flower-superlink", "import os, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "log = sys.argv[sys.argv.index('--log-file') + 1]\n"
            "os.makedirs(os.path.dirname(log), exist_ok=True)\n"
            "open(f'{log}.{os.getpid()}.child', 'w').write(str(child.pid))\n"
            "time.sleep(600)\n")
    flwr = _script(d / "flwr", FAKE_FLWR)
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n[superlink.local]\naddress = ":local:"\n'
                                      "options.num-supernodes = 3\n")
    env = {**os.environ, "FLWR_HOME": str(home), "FAKE_FLWR_DIR": str(d),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port())}  # nothing answers there
    yield env, flwr, d
    for name in ("run.pid", "superlink.pid"):  # whatever a failed test left running, by PID
        if (d / name).is_file():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(int((d / name).read_text()))
                if str(d) in " ".join(proc.cmdline()):
                    proc.kill()
    for record in tmp_path.rglob("superlink.log.*.child"):  # the fake SuperLinks' children, by PID
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(int(record.read_text()))
            if "time.sleep(600)" in " ".join(proc.cmdline()):
                proc.kill()


def _superlink(d: Path, log_file: Path) -> subprocess.Popen:
    return subprocess.Popen([str(d / "flower-superlink"), "--log-file", str(log_file)], start_new_session=True)


def _wait_for(path: Path, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not appear")


def _gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def _fedsafe_run(env: dict, flwr: Path, log: Path) -> subprocess.Popen:
    """`fedsafe run` (the command behind scripts/run_default.sh) in a child process, calling `flwr`."""
    code = textwrap.dedent(f"""
        import sys
        from fedsafe import cli, run_command
        real = run_command.run_command
        run_command.run_command = lambda args, log=None: real(args, log, binary={str(flwr)!r})
        sys.exit(cli.main(["run", "--log", {str(log)!r}, {str(ROOT)!r}]))
    """)
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_sigterm_stops_the_run_and_the_local_superlink_it_started(fake, tmp_path):
    env, flwr, d = fake
    home = Path(env["FLWR_HOME"])
    # Not this command's: a SuperLink of this FLWR_HOME already running, and one of another FLWR_HOME.
    before = _superlink(d, home / "local-superlink" / "superlink.log")
    other = _superlink(d, tmp_path / "other-home" / "local-superlink" / "superlink.log")
    proc = _fedsafe_run(env, flwr, tmp_path / "run.log")
    try:
        started = int(_wait_for(d / "superlink.pid", 300))
        _wait_for(tmp_path / "run.log")  # the run id line is through
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signal.SIGTERM, out
        assert (d / "stopped").read_text() == "42"  # flwr stop 42
        assert _gone(int((d / "run.pid").read_text()))  # flwr run itself
        assert _gone(started), out  # the SuperLink `flwr run` started, by PID
        child = int(_wait_for(home / "local-superlink" / f"superlink.log.{started}.child", 30))
        assert _gone(child), out  # and the simulation it ran
        assert before.poll() is None and other.poll() is None  # nobody else's
        assert "SIGTERM: stopping run 42 (flwr stop 42)" in out and f"(PID {started})" in out
        assert "fedsafe: stopped by SIGTERM" in out and "Traceback" not in out
        assert "SuperNodes changed" not in out  # flwr's note does not apply: the federation sets its size
        assert "SuperNodes changed" in (tmp_path / "run.log").read_text()  # the log keeps every line
    finally:
        for p in (before, other, proc):
            p.kill()
            p.wait()


def test_finished_run_leaves_a_superlink_that_still_has_active_runs(fake, tmp_path):
    env, flwr, d = fake
    (d / "runs.json").write_text(json.dumps([{"run-id": "7", "status": "running"}]))
    proc = _fedsafe_run({**env, "FAKE_RUN_SECONDS": "0"}, flwr, tmp_path / "run.log")
    out, _ = proc.communicate(timeout=300)
    started = int((d / "superlink.pid").read_text())
    assert proc.returncode == 1, out  # flwr run exited 0, but the run printed no run directory
    assert f"leaving the local SuperLink (PID {started}) running: 1 run(s) still active" in out
    assert not (d / "stopped").exists()
    assert "FAILED: the run printed no run directory: a ServerApp error line" in out
    assert psutil.pid_exists(started)  # the fixture stops it


def test_timeout_stops_the_run_and_other_runs_are_reported(fake, tmp_path):
    env, flwr, d = fake
    (d / "runs.json").write_text(json.dumps([{"run-id": "7", "status": "running"},
                                             {"run-id": "6", "status": "finished:completed"}]))
    remote = Flwr(env, {"name": "remote", "address": "127.0.0.1:9093"}, "remote", str(flwr))
    assert not LocalSuperLink(remote).managed  # a SuperLink someone else runs: never stopped here
    assert remote.busy_note().startswith("1 other run(s) active on SuperLink 'remote'")
    lines, said = [], []
    outcome = remote.run(["."], lines.append, timeout=3, say=said.append)
    assert (outcome.returncode, outcome.run_id, outcome.stopped) == (124, "42", "timeout")
    assert (d / "stopped").read_text() == "42" and said == ["timeout: stopping run 42 (flwr stop 42)"]
    assert _gone(int((d / "run.pid").read_text()))
    assert lines[0] == "Successfully started run 42\n"


def test_environment_errors_say_how_to_fix(tmp_path):
    with pytest.raises(SetupError, match="FLWR_HOME is not set.*flower_env.sh"):
        federation({})
    with pytest.raises(SetupError, match="does not exist.*flower_env.sh"):
        federation({"FLWR_HOME": str(tmp_path)})
    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "gone"\n[superlink.local]\naddress = ":local:"\n')
    with pytest.raises(SetupError, match="'gone' is not declared"):
        federation({"FLWR_HOME": str(tmp_path)})
    assert federation({"FLWR_HOME": str(tmp_path)}, "local")["address"] == ":local:"


def test_flwr_run_arguments_pass_through(monkeypatch):
    from fedsafe import cli, run_command

    seen = {}
    monkeypatch.setattr(run_command, "run_command", lambda args, log=None: seen.update(args=args, log=log) or 0)
    assert cli.main(["run", "--log", "x.log", ".", "local", "--run-config", "seed=1", "--stream"]) == 0
    assert seen == {"args": [".", "local", "--run-config", "seed=1", "--stream"], "log": Path("x.log")}
    assert cli.main(["run", "-c", "seed=1"]) == 0 and seen["args"] == ["-c", "seed=1"]
    assert run_command.split_flwr_args([".", "local", "-c", "a=1 b='x y'", "--federation", "@a/b",
                                        "--run-config=c=2", "--stream"]) == ([".", "local"], ["a=1 b='x y'", "c=2"])


def test_fedsafe_run_checks_the_config_and_its_files_before_starting(fake, tmp_path, monkeypatch, capsys):
    from fedsafe import cli, run_command

    env, flwr, d = fake
    real = run_command.run_command
    monkeypatch.setattr(run_command, "run_command", lambda args, log=None: real(args, log, env, binary=str(flwr)))
    bench = tmp_path / "bench.csv"
    bench.write_text("text\nhello\n")
    assert cli.main(["run", str(ROOT), "--run-config", f"eval.safety.benchmark='{bench}'"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsafe: error: eval.safety.benchmark=") and "no prompt column" in err
    assert not (d / "run.pid").exists()  # flwr run never started
