"""`fedsafe eval`: the stage evaluation of a run (eval/stages.py), applied to any model.

The model is a base model (the bundled name, a Hub id or a folder), optionally with a PEFT LoRA
adapter on top: any checkpoint a fedsafe run writes (`RUN_DIR/adapters/round-NNN`,
`RUN_DIR/adapters/posthoc`) or any other PEFT adapter. The numbers are the ones a run records
for its stages: safety rate on the harmful benchmark (judge says safe), over-refusal of the
bundled held-out benign prompts, and the log-likelihood helpfulness proxy; with eval.* keys
(`--run-config`), the paper's sampling, more judges, RM and MT-1 as well.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fedsafe import models, preflight
from fedsafe.config import BUNDLED_MODEL, from_run_config
from fedsafe.dense import dequantize_4bit_layers
from fedsafe.eval.stages import Evaluator

log = logging.getLogger(__name__)
STAGE = "eval"  # the stage name in log lines


def adapter_run_value(adapter: Path, key: str) -> str | None:
    """A run-config value (`model.name`, `model.template`) of the run a fedsafe adapter comes from
    (RUN_DIR/adapters/<name>/ -> RUN_DIR/config.json), or None when it is not in a run dir."""
    config = adapter.parent.parent / "config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get(key)
        return str(value) if value else None
    return None


def _check_adapter(adapter: Path) -> Path:
    adapter = adapter.expanduser().resolve()
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    return adapter


def evaluate_model(model: str | None, *, adapter: str | Path | None = None, benchmark: str = "bundled",
                   limit: int = 0, quantization: int = 4, judge: str = "rule", max_new_tokens: int = 40,
                   out: str | Path | None = None, seed: int = 0, template: str | None = None,
                   overrides: dict | None = None) -> dict:
    """Safety rate, benign refusal rate and helpfulness of `model` (+ `adapter`).

    model: bundled name, Hub id or folder; None = the adapter's run model, else the bundled one.
    limit: at most this many prompts of each set, harmful and benign (0 = all).
    out: write every prompt, response and verdict here (JSONL), as a run's eval/<stage>.jsonl.
    overrides: more run-config keys (eval.temperature, eval.rm-model, ...); they win over the above.
    template: `model.template`; None = the adapter's run's, else 'auto'.
    """
    adapter_dir = _check_adapter(Path(adapter)) if adapter else None
    if model is None:
        model = (adapter_run_value(adapter_dir, "model.name") if adapter_dir else None) or BUNDLED_MODEL
    if template is None:
        template = (adapter_run_value(adapter_dir, "model.template") if adapter_dir else None) or "auto"
    settings = from_run_config({
        "model.name": model, "model.quantization": quantization, "seed": seed, "model.template": template,
        "eval.safety.benchmark": benchmark, "eval.safety.limit": limit, "eval.benign.limit": limit,
        "eval.judge": judge, "eval.max-new-tokens": max_new_tokens, **(overrides or {}),
    })
    preflight.check(settings)  # the model folder and the benchmark file, before any model loads
    evaluator = Evaluator(settings, run_dir=None)  # loads the prompts (and a model judge) first

    started = time.perf_counter()
    tokenizer = models.cached_tokenizer(settings.model)
    network = models.load_base_model(settings.model)
    if adapter_dir is not None:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, str(adapter_dir))
    if models.server_dense(settings.model):  # after the adapter: its layers wrap the 4-bit ones, as in a run
        dequantize_4bit_layers(network)
    network.eval()
    load_seconds = time.perf_counter() - started

    rows = Path(out).expanduser().resolve() if out else None
    metrics = evaluator.stage(STAGE, network, tokenizer, rows_path=rows)
    log.info("safety rate %.1f %%, benign refusal %.1f %%, helpfulness %.3f",
             100 * metrics["safety_rate"], 100 * metrics["benign_refusal_rate"], metrics["helpfulness"])
    return {
        "model": settings.model.name, "adapter": str(adapter_dir) if adapter_dir else None,
        "quantization": settings.model.quantization, "benchmark": settings.eval.safety.benchmark,
        "judge": settings.eval.judge,
        **metrics, "load_seconds": round(load_seconds, 1), "rows": str(rows) if rows else None,
    }
