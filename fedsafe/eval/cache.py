"""The `initial` evaluation, kept once per model and evaluation setup under the fedsafe cache.

The initial stage scores the base model: LoRA starts with B = 0, so the adapter adds exactly
nothing, and every run of one model with one evaluation setup gets the same numbers. The key
covers what shapes them: the model's files, the adapter's effect (none while B = 0, else its
digest), the prompts, the generation settings (the seed only when sampling), the judge and the
other eval settings, the source of the code that computes them, the library versions and the
device type. A run that misses computes the stage as before and stores it; one that hits copies
the metrics and per-prompt rows into its run directory (`eval.initial-cache` turns this off).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from fedsafe import models
from fedsafe.config import Settings
from fedsafe.files import read_json, write_json

log = logging.getLogger(__name__)
CACHE = "initial-eval"
STAGE = "initial"
# Modules whose code decides the initial stage's numbers (every eval/ module besides these): any
# edit to them starts a new entry.
CODE = ("generation.py", "data.py", "training.py", "models.py", "dense.py", "templates.py")
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes")
# Eval settings that do not enter the stage itself.
NOT_IN_STAGE = ("initial", "initial_cache", "every_rounds", "probe_size")
MODEL_FILES = (".json", ".safetensors", ".bin", ".model", ".gguf", ".txt")


def adapter_effect(state: dict[str, torch.Tensor]) -> str:
    """'none' while every LoRA B matrix is zero (the adapter adds nothing), else its digest."""
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    return "none" if lora_b and all(not v.any() for v in lora_b) else models.state_digest(state)


def model_files(name: str) -> list:
    """(file, size, mtime) of a local model folder, the bundled one included; [] for a Hub id."""
    folder = Path(models.resolve_model_path(name))
    if not folder.is_dir():
        return []
    return sorted([p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in folder.iterdir()
                  if p.is_file() and p.suffix in MODEL_FILES)


def code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in [*sorted((root / "eval").glob("*.py")), *(root / name for name in CODE)]:
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


def cache_key(settings: Settings, evaluator, state: dict[str, torch.Tensor]) -> str:
    generation = dataclasses.asdict(evaluator.generation)
    if generation.get("temperature", 0) <= 0:
        generation.pop("seed")  # greedy answers do not depend on it
    ev = {k: v for k, v in dataclasses.asdict(settings.eval).items() if k not in NOT_IN_STAGE}
    blob = {
        "model": [settings.model.name, settings.model.quantization, settings.model.trust_remote_code,
                  settings.model.template, model_files(settings.model.name)],
        # the files of every model that scores answers (phrase rules have none: [])
        "scorers": [model_files(spec) for spec in (*settings.eval.judges, settings.eval.rm_model) if spec],
        "adapter": adapter_effect(state), "harmful": evaluator.harmful, "benign": evaluator.benign,
        "mt1": evaluator.mt1,
        "generation": generation, "eval": ev, "seq_length": evaluator.seq_length, "code": code_digest(),
        "libraries": [importlib.metadata.version(p) for p in LIBRARIES], "device": models.device().type,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def initial_stage(settings: Settings, evaluator, model, tokenizer, state: dict[str, torch.Tensor],
                  run_dir: Path) -> dict:
    """The initial stage's metrics, from the cache or computed (and then cached); its rows end
    up in run_dir/eval/initial.jsonl either way. `model` already holds `state`."""
    started = time.perf_counter()
    entry = models.cache_root() / CACHE / cache_key(settings, evaluator, state)
    rows = run_dir / "eval" / f"{STAGE}.jsonl"
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs of a sweep in parallel compute it once
        if not (entry / "metrics.json").is_file():
            metrics = evaluator.stage(STAGE, model, tokenizer, rows_path=rows)
            shutil.copyfile(rows, entry / "rows.jsonl")
            write_json(entry / "metrics.json", metrics)  # written last: marks the entry complete
            return metrics
    rows.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(entry / "rows.jsonl", rows)
    metrics = read_json(entry / "metrics.json")
    log.info("eval %s: from the cache %s (computed in %s s)", STAGE, entry, metrics.get("seconds"))
    return {**metrics, "computed_seconds": metrics.get("seconds"), "seconds": round(time.perf_counter() - started, 1),
            "cached": str(entry)}
