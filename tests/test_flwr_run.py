"""One real `flwr run`: a SuperLink in simulation mode (started here, stopped by PID), Ray actors,
the tiny model. `flwr run` exits 0 even when the run fails, so the outcome is read from files."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsafe.check_run import problems, run_dir_from

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"superlink exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def superlink(tmp_path):
    """A simulation-mode SuperLink in its own process group, killed as a group afterwards."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    port = free_port()  # flwr 1.42 serves the runtime, control and fleet APIs on one HTTP port
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FEDSAFE_CACHE": str(tmp_path / "cache"),
           "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=open(tmp_path / "superlink.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port(port, proc)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "sim"\n\n[superlink.sim]\n'
            f'address = "127.0.0.1:{port}"\ninsecure = true\n'
            "options.num-supernodes = 3\noptions.backend.client-resources.num-cpus = 1\n"
        )
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_flwr_run_simulation_completes(superlink, tiny_model_dir, tmp_path):
    out = tmp_path / "runs"
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("\n".join([
        f'"model.name" = "{tiny_model_dir}"', '"model.lora.r" = 4', '"model.lora.target-modules" = "q_proj,v_proj"',
        '"num-server-rounds" = 2', '"clients.num" = 3', '"clients.per-round" = 2',
        '"train.local-steps" = 2', '"train.batch-size" = 2', '"train.seq-length" = 96',
        '"attack.num-malicious" = 0', '"posthoc.steps" = 2', '"posthoc.num-samples" = 4',
        '"eval.safety.limit" = 2', '"eval.benign.limit" = 2', '"eval.max-new-tokens" = 3',
        f'"output-dir" = "{out}"', "",
    ]))
    log = subprocess.run(
        [str(BIN / "flwr"), "run", str(ROOT), "sim", "--stream", "--run-config", str(overrides)],
        env=superlink, capture_output=True, text=True, timeout=600,
    )
    text = log.stdout + log.stderr
    run_dir = run_dir_from_text(text, out)
    assert run_dir is not None, text[-3000:]
    assert problems(run_dir) == [], text[-3000:]
    assert (run_dir / "adapters" / "round-002" / "adapter_config.json").is_file()


def run_dir_from_text(text: str, out: Path):
    log = out.parent / "flwr-run.log"
    log.write_text(text)
    return run_dir_from(log)
