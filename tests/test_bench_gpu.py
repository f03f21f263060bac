"""bench/gpu.py, kept ready for GPU machines, runs here on CPU with --tiny: the default flow in one
process and the random "7B-shaped" model, each with its figures in the last JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_bench_runs_tiny(tmp_path):
    env = {**os.environ, "FEDSAFE_CACHE": str(tmp_path / "cache"), "FLWR_TELEMETRY_ENABLED": "0"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--dir", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "gpu" and figures["tiny"] is True
    e = figures["experiment"]
    assert len(e["rounds_s"]) == 2 and all(s > 0 for s in e["rounds_s"])
    assert set(e["eval_s"]) == {"initial", "after_fl", "after_posthoc"}
    assert e["generation"]["new_tokens"] > 0 and e["generation"]["tokens_per_s"] > 0
    s = figures["7b"]
    assert s["parameters"] > 0 and s["seconds_per_step"] > 0 and s["generation"]["tokens_per_s"] > 0
    assert not (tmp_path / "llama-7b-shaped").exists()  # the random model's folder is removed


def test_gpu_bench_needs_a_gpu_or_tiny():
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is here")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py")], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 2 and "--tiny" in out.stderr
