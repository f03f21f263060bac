"""Helpfulness offline: the mean per-token log-likelihood of reference answers on held-out
benign pairs (higher is better). It needs no outside judge, and it falls when fine-tuning (or a
defense) damages the model's ordinary answers. Graded helpfulness (1-10 by an LLM, MT-1) is in
grader.py and mtbench.py.
"""

from __future__ import annotations


import torch

from fedsafe import data, generation
from fedsafe.training import output_cache, repeated_cache, response_nll


def shared_prefix(examples: list[data.Example]) -> list[int]:
    """The prompt tokens every example starts with (the chat template's system turn), stopping
    before the token that predicts the first response token of any of them."""
    first = min(next(i for i, x in enumerate(e["labels"]) if x != data.IGNORE_INDEX) for e in examples)
    return generation.shared_prefix([e["input_ids"][:first] for e in examples])


def scored_examples(tokenizer, pairs: list[data.Pair], seq_length: int, close_turn: bool = True) -> list[data.Example]:
    """`pairs` tokenized for scoring; every pair must keep a response token."""
    examples = data.tokenize_pairs(tokenizer, pairs, seq_length, close_turn)
    if len(examples) != len(pairs):
        raise ValueError("a pair has no response tokens left after truncation; raise train.seq-length")
    return examples


def pair_logliks(model, tokenizer, pairs: list[data.Pair], seq_length: int, batch_size: int = 16,
                 close_turn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-likelihood of each reference response and its token count: (n,), (n,)."""
    examples = scored_examples(tokenizer, pairs, seq_length, close_turn)
    return example_logliks(model, examples, tokenizer.pad_token_id, batch_size)


@torch.no_grad()
def example_logliks(model, examples: list[data.Example], pad_id: int, batch_size: int = 16
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """`pair_logliks` on examples tokenized once (the behaviour probe scores the same ones n + 1
    times a round). The shared prompt prefix runs through the model once and its key/value cache
    serves every batch; batches take the examples in order of length, so little is padding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prefix = shared_prefix(examples)
    cache = output_cache(model(input_ids=torch.tensor([prefix], device=device), use_cache=True)) if prefix else None
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    rest = [data.Example(input_ids=e["input_ids"][len(prefix):], labels=e["labels"][len(prefix):]) for e in examples]
    sums, counts = torch.zeros(len(examples)), torch.zeros(len(examples), dtype=torch.long)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in data.collate([rest[i] for i in idx], pad_id).items()}
        past = None
        if cache is not None:
            past = repeated_cache(cache, len(idx))
            batch["attention_mask"] = torch.cat(
                [torch.ones(len(idx), len(prefix), dtype=batch["attention_mask"].dtype, device=device),
                 batch["attention_mask"]], dim=1)
        nll, count = response_nll(model, batch, past)
        sums[idx], counts[idx] = -nll.float().cpu(), count.cpu()
    model.train(was_training)
    return sums, counts


def loglik_proxy(model, tokenizer, pairs: list[data.Pair], seq_length: int, batch_size: int = 16) -> float:
    """Mean per-token log-likelihood over all reference answer tokens."""
    sums, counts = pair_logliks(model, tokenizer, pairs, seq_length, batch_size)
    return float(sums.sum() / counts.sum().clamp(min=1))
