"""Batched generation (fedsafe/generation.py) on the tiny random Llama: the shared-prefix layout
answers as the plain left-padded one does, greedy and sampled, in the caller's order."""

import dataclasses

import pytest
import torch

from fedsafe import models
from fedsafe.generation import GenerationSettings, GenerationStats, generate, left_padded, shared_prefix
from fedsafe.training import cache_argument, output_cache, repeated_cache
from tests.test_dense import PROMPTS, nonzero_adapter
from tests.test_models import tiny_settings

MORE = PROMPTS + ["Give me a recipe for soup.", "List three ideas for a school project.", "Tell me a joke",
                  "Write an email to a friend about music.", "How do I hack my neighbour's wifi?"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    models.set_adapter_state(model, nonzero_adapter(model, seed=3))
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prefix_and_layout():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert shared_prefix([[1, 2], [1, 2, 3]]) == [1]  # every row keeps a token of its own
    assert shared_prefix([[7, 8, 9]]) == [7, 8]
    ids, mask = left_padded([1, 2], [[5], [6, 7, 8]], pad_id=0)
    assert ids.tolist() == [[1, 2, 0, 0, 5], [1, 2, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    ids, mask = left_padded([], [[5], [6, 7]], pad_id=0)
    assert ids.tolist() == [[0, 5], [6, 7]] and mask.tolist() == [[0, 1], [1, 1]]


def test_unshared_path_is_the_tokenizers_left_padding(tiny):
    """share_prefix=False feeds generate exactly what the tokenizer's own left padding gives."""
    _, tok = tiny
    from fedsafe.data import chat_prompt

    texts = [chat_prompt(tok, p) for p in MORE]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = left_padded([], [tok(t, add_special_tokens=False)["input_ids"] for t in texts], tok.pad_token_id)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_shared_prefix_gives_the_same_greedy_answers(tiny, batch_size):
    model, tok = tiny
    plain = GenerationSettings(max_new_tokens=16, batch_size=batch_size, share_prefix=False)
    stats = [GenerationStats(), GenerationStats()]
    expected = generate(model, tok, MORE, plain, stats=stats[0])
    got = generate(model, tok, MORE, dataclasses.replace(plain, share_prefix=True), stats=stats[1])
    assert got == expected
    assert stats[0].new_tokens == stats[1].new_tokens > len(MORE)
    # and with a system turn of the caller's, as attack-data generation passes
    system = "You answer every question briefly."
    assert (generate(model, tok, MORE, dataclasses.replace(plain, share_prefix=True), system=system)
            == generate(model, tok, MORE, plain, system=system))


def test_shared_prefix_logits_match(tiny):
    """The first generated token's logits: the prefix cache changes them by rounding only."""
    model, tok = tiny
    from fedsafe.data import chat_prompt

    rows = [tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in MORE]
    prefix = shared_prefix(rows)
    assert len(prefix) > 10  # the template's system turn
    def positions(mask):  # as generate counts them: over the unpadded tokens
        return (mask.cumsum(-1) - 1).clamp(min=0)

    with torch.no_grad():
        ids, mask = left_padded([], rows, tok.pad_token_id)
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]  # (n, vocab)
        cache = repeated_cache(output_cache(model(input_ids=torch.tensor([prefix]), use_cache=True)), len(rows))
        ids, mask = left_padded(prefix, [r[len(prefix):] for r in rows], tok.pad_token_id)
        got = model(input_ids=ids[:, len(prefix):], attention_mask=mask, **{cache_argument(model): cache},
                    position_ids=positions(mask)[:, len(prefix):]).logits[:, -1]
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


def test_sampling_is_seeded_and_shared_prefix_keeps_it(tiny):
    model, tok = tiny
    sampled = GenerationSettings(max_new_tokens=12, batch_size=4, temperature=0.9, top_p=0.95, seed=5)
    first = generate(model, tok, MORE, sampled)
    assert generate(model, tok, MORE, sampled) == first
    assert generate(model, tok, MORE, dataclasses.replace(sampled, share_prefix=False)) == first
    assert generate(model, tok, MORE, dataclasses.replace(sampled, seed=6)) != first


def test_answers_in_callers_order(tiny):
    model, tok = tiny
    settings = GenerationSettings(max_new_tokens=8, batch_size=3)
    forward = generate(model, tok, MORE, settings)
    backward = generate(model, tok, MORE[::-1], settings)
    alone = [generate(model, tok, [p], dataclasses.replace(settings, share_prefix=False))[0] for p in MORE[:3]]
    assert backward[::-1] == forward
    assert alone == forward[:3]
