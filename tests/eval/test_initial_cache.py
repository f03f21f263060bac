"""The initial evaluation kept under the fedsafe cache (fedsafe/eval/cache.py), on the tiny model:
a second run with the same model and evaluation setup reads it back, rows included; anything
that changes the numbers starts a new entry."""

import dataclasses

import pytest
import torch

from fedsafe import models
from fedsafe.config import from_run_config
from fedsafe.eval.cache import CACHE, adapter_effect, initial_stage
from fedsafe.eval.stages import Evaluator
from fedsafe.files import read_jsonl
from tests.test_federation import tiny_run_config


@pytest.fixture
def setup(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSAFE_CACHE", str(tmp_path / "cache"))

    def build(**overrides):
        settings = from_run_config(tiny_run_config(tiny_model_dir, tmp_path / "runs", **overrides))
        model = models.cached_lora_model(settings.model, settings.seed, dense=True)
        state = models.initial_adapter(settings.model, settings.seed, dense=True)
        models.set_adapter_state(model, state)
        return settings, Evaluator(settings, None), model, models.cached_tokenizer(settings.model), state

    return build


def entries(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache" / CACHE).iterdir())


def test_second_run_reads_the_first(setup, tmp_path):
    settings, evaluator, model, tok, state = setup()
    first = initial_stage(settings, evaluator, model, tok, state, tmp_path / "run-a")
    assert "cached" not in first
    second = initial_stage(settings, evaluator, model, tok, state, tmp_path / "run-b")
    assert second["cached"] and second["computed_seconds"] == first["seconds"]
    assert {k: second[k] for k in first if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    rows = read_jsonl(tmp_path / "run-a" / "eval" / "initial.jsonl")
    assert rows and read_jsonl(tmp_path / "run-b" / "eval" / "initial.jsonl") == rows
    # greedy answers do not depend on the seed, nor on LoRA's random A while B = 0
    settings, evaluator, model, tok, state = setup(seed=4)
    assert initial_stage(settings, evaluator, model, tok, state, tmp_path / "run-c")["cached"]
    assert len(entries(tmp_path)) == 1


@pytest.mark.parametrize("change", ["eval.max-new-tokens", "eval.safety.limit", "adapter", "sampling",
                                    "another-judge"])
def test_what_changes_the_numbers_misses(setup, tmp_path, change):
    settings, evaluator, model, tok, state = setup()
    initial_stage(settings, evaluator, model, tok, state, tmp_path / "run-a")
    if change == "adapter":  # a trained adapter: no longer the base model
        state = {k: (torch.full_like(v, 0.01) if "lora_B" in k else v) for k, v in state.items()}
        models.set_adapter_state(model, state)
    elif change == "sampling":
        evaluator.generation = dataclasses.replace(evaluator.generation, temperature=0.7)
    elif change == "another-judge":  # a second judge model scores the same answers
        settings = dataclasses.replace(settings, eval=dataclasses.replace(
            settings.eval, judges=(*settings.eval.judges, str(tmp_path / "judge"))))
        (tmp_path / "judge").mkdir()
        (tmp_path / "judge" / "config.json").write_text("{}")
    else:
        settings, evaluator, model, tok, state = setup(**{change: 2 if change == "eval.safety.limit" else 5})
    again = initial_stage(settings, evaluator, model, tok, state, tmp_path / "run-b")
    assert "cached" not in again
    assert len(entries(tmp_path)) == 2


def test_adapter_effect():
    zero = {"a.lora_A.weight": torch.ones(2, 3), "a.lora_B.weight": torch.zeros(3, 2)}
    assert adapter_effect(zero) == "none"
    trained = {**zero, "a.lora_B.weight": torch.full((3, 2), 1e-3)}
    assert adapter_effect(trained) != "none" and len(adapter_effect(trained)) == 16
