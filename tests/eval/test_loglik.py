"""Log-likelihoods with the shared prompt prefix cached: the same numbers as scoring each pair alone."""

import torch

from fedsafe import data, models
from fedsafe.eval.helpfulness import pair_logliks, shared_prefix
from fedsafe.training import response_nll
from tests.test_models import tiny_settings


def test_cached_prefix_gives_the_same_logliks(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir)  # 4-bit, as the server's model
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    state = models.adapter_state(model)
    models.set_adapter_state(model, models.unflatten(torch.randn(models.flatten(state).numel()) * 0.05, state))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = data.bundled("helpful_train")[:7] + data.bundled("harmful_train")[:5]
    examples = data.tokenize_pairs(tok, pairs, 96)
    prefix = shared_prefix(examples)
    assert prefix and all(e["input_ids"][: len(prefix)] == prefix for e in examples)
    assert all(e["labels"][len(prefix)] == data.IGNORE_INDEX for e in examples)  # it predicts no response token

    sums, counts = pair_logliks(model, tok, pairs, 96, batch_size=5)
    model.eval()
    with torch.no_grad():
        alone = [response_nll(model, data.collate([e], tok.pad_token_id)) for e in examples]
    assert torch.allclose(sums, -torch.cat([nll for nll, _ in alone]), atol=1e-3)
    assert counts.tolist() == [int(c) for _, c in alone]
