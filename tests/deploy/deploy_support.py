"""Shared by the deployment tests (a plain module: `from conftest import` would be ambiguous).

No __init__.py in tests/deploy on purpose: `deploy` must stay the repository's deploy/ folder.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.local import BIN, LocalFederation, Proc, free_port  # noqa: E402,F401

NUM_NODES = 3


def write_run_config(path: Path, model_dir: Path, out: Path, **overrides) -> Path:
    """The tiny-model run of tests/test_flwr_run.py: 2 rounds, 2 local steps, small evals."""
    values = {
        "model.name": str(model_dir), "model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj",
        "num-server-rounds": 2, "clients.num": NUM_NODES, "clients.per-round": NUM_NODES,
        "clients.timeout": 150.0, "train.local-steps": 2, "train.batch-size": 2, "train.seq-length": 96,
        "attack.num-malicious": 0, "posthoc.steps": 2, "posthoc.num-samples": 4,
        "eval.safety.limit": 2, "eval.benign.limit": 2, "eval.max-new-tokens": 3, "output-dir": str(out),
    }
    values.update(overrides)
    path.write_text("".join(f'"{k}" = {json.dumps(v)}\n' for k, v in values.items()))
    return path
