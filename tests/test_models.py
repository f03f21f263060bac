"""Base model + LoRA on a tiny random Llama: real bitsandbytes 4-bit, real training, adapters that
survive ArrayRecord and PEFT save/load unchanged."""

import pytest
import torch

from fedsafe import data, models
from fedsafe.config import LoraSettings, ModelSettings
from fedsafe.training import sft


def tiny_settings(path, quantization=4, dropout=0.0) -> ModelSettings:
    """The tiny Llama at `path` with a small LoRA on q and v, as the tests load it."""
    return ModelSettings(name=str(path), quantization=quantization, trust_remote_code=False,
                         gradient_checkpointing=False,
                         lora=LoraSettings(r=4, alpha=8, dropout=dropout, target_modules=("q_proj", "v_proj")))


@pytest.fixture(scope="module")
def tiny_lora(tiny_model_dir):
    return models.add_lora(models.load_base_model(tiny_settings(tiny_model_dir)), tiny_settings(tiny_model_dir), seed=0)


def test_loads_in_4bit_nf4(tiny_lora):
    import bitsandbytes as bnb

    linear4 = [m for m in tiny_lora.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linear4, "no 4-bit layers"
    assert linear4[0].weight.quant_type == "nf4"
    assert linear4[0].compute_dtype == torch.float32  # CPU: fp32 compute


def test_trains_and_roundtrips_adapter(tiny_lora, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [data.Pair(instruction="Name three famous composers.", response="Bach, Mozart and Beethoven.")] * 4
    examples = data.tokenize_pairs(tok, pairs, 64)
    before = models.adapter_state(tiny_lora)
    result = sft(tiny_lora, examples, steps=8, batch_size=2, lr=5e-2, seed=0, pad_id=tok.pad_token_id)
    after = models.adapter_state(tiny_lora)
    assert result.last_loss < result.first_loss
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # ArrayRecord round trip is exact
    back = models.from_arrays(models.to_arrays(after))
    assert list(back) == list(after) and all(torch.equal(back[k], after[k]) for k in after)

    # PEFT format: PeftModel.from_pretrained loads what fedsafe wrote
    folder = models.save_adapter(after, tmp_path / "adapter", tiny_settings(tiny_model_dir))
    assert models.load_adapter_file(folder).keys() == after.keys()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, folder)
    reloaded = models.adapter_state(peft_model)
    assert all(torch.allclose(reloaded[k], after[k]) for k in after)

    # and the set/get pair restores an earlier state exactly
    models.set_adapter_state(tiny_lora, before)
    assert all(torch.equal(models.adapter_state(tiny_lora)[k], before[k]) for k in before)


def test_flatten_unflatten_inverse(tiny_lora):
    state = models.adapter_state(tiny_lora)
    again = models.unflatten(models.flatten(state), state)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_wrong_keys_rejected(tiny_lora):
    with pytest.raises(KeyError, match="adapter keys differ"):
        models.set_adapter_state(tiny_lora, {"nope": torch.zeros(1)})


@pytest.mark.parametrize("bits", [8, 0])
def test_other_precisions_train(tiny_model_dir, bits):
    settings = tiny_settings(tiny_model_dir, quantization=bits)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = data.tokenize_pairs(tok, [data.Pair(instruction="Hi?", response="Hello there.")], 32)
    result = sft(model, examples, steps=2, batch_size=1, lr=1e-2, seed=0, pad_id=tok.pad_token_id)
    assert result.steps == 2 and result.loss > 0


def test_same_seed_same_initial_adapter(tiny_model_dir):
    s = tiny_settings(tiny_model_dir, quantization=0)
    a = models.adapter_state(models.add_lora(models.load_base_model(s), s, seed=3))
    b = models.adapter_state(models.add_lora(models.load_base_model(s), s, seed=3))
    assert all(torch.equal(a[k], b[k]) for k in a)
