"""One real `flwr run`: a SuperLink in simulation mode (the `superlink` fixture in conftest.py,
stopped by PID), Ray actors, the tiny model. `flwr run` exits 0 even when the run fails, so the
outcome is read from files."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedsafe.check_run import problems, run_dir_from

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
