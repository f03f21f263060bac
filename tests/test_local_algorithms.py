"""FedProx and SCAFFOLD as hooks of the one SFT loop, on the tiny model: real forward/backward,
real AdamW, the hooks' effect measured on the LoRA weights."""

import pytest
import torch

from fedsafe import data, models
from fedsafe.config import from_run_config
from fedsafe.local_algorithms import FedProx, Scaffold, local_algorithm, scaffold_control, trainable_by_key
from fedsafe.training import sft
from tests.test_models import tiny_settings

LR = 5e-2


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir, quantization=0, dropout=0.05)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [data.Pair(instruction=q, response="I'm sorry, but I cannot help with that.")
             for q in ("How do I bake bread?", "Name three famous composers.", "Write a haiku about the sea.")]
    examples = data.tokenize_pairs(tok, pairs, 64)
    # a start away from LoRA's zero B, as the global adapter is after a round
    start = models.adapter_state(model)
    start = models.unflatten(models.flatten(start) + 0.05 * torch.randn(models.flatten(start).shape,
                             generator=torch.Generator().manual_seed(0)), start)
    return model, tok, examples, start


def train(setup, steps=6, local=None):
    model, tok, examples, start = setup
    models.set_adapter_state(model, start)
    result = sft(model, examples, steps=steps, batch_size=2, lr=LR, seed=3, pad_id=tok.pad_token_id, local=local)
    return models.adapter_state(model), result


def test_fedprox_with_mu_zero_is_bit_identical_to_plain_training(setup):
    plain, plain_result = train(setup)
    prox, prox_result = train(setup, local=FedProx(0.0))
    assert all(torch.equal(plain[k], prox[k]) for k in plain)
    assert prox_result.loss == plain_result.loss


def test_fedprox_keeps_the_local_weights_closer_to_the_global_ones(setup):
    start = models.flatten(setup[3])
    distances = {}
    for mu in (0.0, 0.1, 1.0):
        state, result = train(setup, local=FedProx(mu))
        distances[mu] = float((models.flatten(state) - start).norm())
        assert result.last_loss < result.first_loss  # still learning
    assert distances[1.0] < distances[0.1] < distances[0.0]


def test_scaffold_with_zero_correction_is_plain_training(setup):
    plain, _ = train(setup)
    zero = {k: torch.zeros_like(v) for k, v in setup[3].items()}
    corrected, _ = train(setup, local=Scaffold(zero))
    assert all(torch.equal(plain[k], corrected[k]) for k in plain)


def test_scaffold_moves_each_step_by_minus_lr_times_the_correction(setup):
    """One step: the same gradient as plain training, then -lr (c - c_i) on every LoRA weight."""
    plain, _ = train(setup, steps=1)
    g = torch.Generator().manual_seed(1)
    correction = {k: torch.randn(v.shape, generator=g) for k, v in setup[3].items()}
    corrected, _ = train(setup, steps=1, local=Scaffold(correction))
    for k in plain:
        assert torch.allclose(corrected[k], plain[k] - LR * correction[k], atol=1e-6), k


def test_scaffold_rejects_a_correction_that_does_not_fit_the_adapter(setup):
    model = setup[0]
    keys = list(trainable_by_key(model))
    assert keys == list(setup[3])  # the hook's keys are the adapter's
    with pytest.raises(KeyError, match="correction keys differ"):
        Scaffold({keys[0]: torch.zeros(1)}).start(model)
    bad = {k: torch.zeros(v.shape) for k, v in setup[3].items()}
    bad[keys[0]] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="has shape"):
        Scaffold(bad).start(model)


def test_scaffold_control_is_option_two():
    x, y, correction = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 2.5]), torch.tensor([0.1, -0.2])
    # c_i+ = c_i - c + (x - y) / (K lr) = -(c - c_i) + (x - y) / (K lr)
    assert torch.allclose(scaffold_control(x, y, correction, steps=5, lr=0.1),
                          torch.tensor([0.5 / 0.5 - 0.1, -0.5 / 0.5 + 0.2]))


def test_the_config_chooses_the_hook():
    assert local_algorithm(from_run_config({}), None) is None
    prox = local_algorithm(from_run_config({"fl.client-algorithm": "fedprox", "fl.fedprox.mu": 0.3}), None)
    assert isinstance(prox, FedProx) and prox.mu == 0.3
    scaffold = from_run_config({"fl.client-algorithm": "scaffold"})
    assert isinstance(local_algorithm(scaffold, {"w": torch.zeros(1)}), Scaffold)
    with pytest.raises(ValueError, match="carries no control variates"):
        local_algorithm(scaffold, None)
