"""The server's dense copy of a 4-bit model (fedsafe/dense.py) against the 4-bit model itself, on
the tiny random Llama: the same initial adapter, the same logits bit for bit, the same greedy
answers, and the same fine-tuning."""

import dataclasses

import pytest
import torch

from fedsafe import data, models
from fedsafe.dense import wanted
from fedsafe.generation import GenerationSettings, generate
from fedsafe.training import sft
from tests.test_models import tiny_settings

PROMPTS = ["Name three famous composers.", "How do I bake bread?", "Write a haiku about the sea.",
           "What is the capital of France?", "Explain how to steal a car.", "Tell me a story"]


def pair(path, seed=0):
    """(4-bit model, dense copy) with LoRA, both fresh (the cached ones are shared by other tests)."""
    import bitsandbytes as bnb

    settings = tiny_settings(path)
    quantized = models.add_lora(models.load_base_model(settings), settings, seed)
    dense = models.add_lora(models.load_base_model(settings), settings, seed)
    from fedsafe.dense import dequantize_4bit_layers

    assert dequantize_4bit_layers(dense) == sum(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules()) > 0
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in dense.modules())
    return quantized, dense


def nonzero_adapter(model, seed=1):
    """A trained-looking adapter (LoRA B is zero at init, which would hide any difference)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in models.adapter_state(model).items()}


def test_same_initial_adapter_and_logits(tiny_model_dir):
    from transformers import AutoTokenizer

    quantized, dense = pair(tiny_model_dir)
    a, b = models.adapter_state(quantized), models.adapter_state(dense)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    state = nonzero_adapter(quantized)
    models.set_adapter_state(quantized, state)
    models.set_adapter_state(dense, state)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)  # (6, longest) with left padding
    with torch.no_grad():
        expected, got = quantized(**enc).logits, dense(**enc).logits  # (6, longest, vocab)
    assert torch.equal(expected, got)


def test_same_greedy_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    quantized, dense = pair(tiny_model_dir)
    state = nonzero_adapter(quantized, seed=2)
    models.set_adapter_state(quantized, state)
    models.set_adapter_state(dense, state)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    expected = generate(quantized, tok, PROMPTS, settings)
    assert generate(dense, tok, PROMPTS, settings) == expected
    assert any(expected)  # something was generated to compare


def test_same_fine_tuning(tiny_model_dir):
    """The post-hoc defense fine-tunes the server's model: gradients pass through the base layers."""
    from transformers import AutoTokenizer

    quantized, dense = pair(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [data.Pair(instruction=p, response="I cannot help with that.") for p in PROMPTS]
    examples = data.tokenize_pairs(tok, pairs, 64)
    results = [sft(m, examples, steps=4, batch_size=2, lr=5e-2, seed=0, pad_id=tok.pad_token_id)
               for m in (quantized, dense)]
    assert results[0].last_loss == results[1].last_loss
    a, b = models.adapter_state(quantized), models.adapter_state(dense)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in models.adapter_state(pair(tiny_model_dir)[0]).items())


@pytest.mark.parametrize("quantization,device,switch,expected", [
    (4, "cpu", True, True), (4, "cpu", False, False), (8, "cpu", True, False), (0, "cpu", True, False),
    (4, "cuda", True, False),
])
def test_only_for_4bit_on_cpu(tiny_model_dir, quantization, device, switch, expected):
    settings = dataclasses.replace(tiny_settings(tiny_model_dir, quantization), server_dense=switch)
    assert wanted(settings, torch.device(device)) is expected
