"""Batched chat generation with left padding, shared by attacks, post-hoc and evaluation.

Prompts are sorted by length before batching so a batch wastes little padding, and answers are
returned in the caller's order. The tokens every prompt starts with (the chat template's system
turn, a large part of a short prompt) run through the model once per call; their
key/value cache then serves every batch, laid out as `prefix | left padding | own tokens`, with
positions counted over the unpadded tokens as before. The answers are those of the unshared
layout up to float rounding (the same prefix keys, computed in a smaller matmul): identical
greedy answers unless two tokens tie to within it (tests/test_generation.py pins this).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from fedsafe.data import chat_prompt
from fedsafe.progress import Progress
from fedsafe.training import cache_argument, output_cache, repeated_cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 40
    batch_size: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    share_prefix: bool = True  # run the prompts' common first tokens once per call


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def shared_prefix(rows: list[list[int]]) -> list[int]:
    """The tokens every row starts with, leaving each row at least one token of its own (the
    model needs one uncached input to start generating from)."""
    prefix: list[int] = []
    for column in zip(*(row[:-1] for row in rows)):
        if len(set(column)) > 1:
            break
        prefix.append(column[0])
    return prefix


def left_padded(prefix: list[int], rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (b, len(prefix) + longest row): prefix | pads | row."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), len(prefix) + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    mask[:, : len(prefix)] = 1
    for r, row in enumerate(rows):
        ids[r, ids.shape[1] - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[r, ids.shape[1] - len(row):] = 1
    return ids, mask


@torch.no_grad()
def generate(model, tokenizer, instructions: list[str], settings: GenerationSettings = GenerationSettings(),
             *, system: str | None = None, stats: GenerationStats | None = None,
             label: str = "generate") -> list[str]:
    """Answer each instruction (chat template applied); greedy unless temperature > 0."""
    if not instructions:
        return []
    texts = [chat_prompt(tokenizer, x, system) for x in instructions]
    tokens = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    sampling = settings.temperature > 0
    extra = {"temperature": settings.temperature, "top_p": settings.top_p} if sampling else {}
    progress = Progress(label, len(order), "prompt", logger=log)
    prefix = shared_prefix(tokens) if settings.share_prefix and len(tokens) > 1 else []
    cache = output_cache(model(input_ids=torch.tensor([prefix], device=device), use_cache=True)) if prefix else None
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            ids, mask = left_padded(prefix, [tokens[i][len(prefix):] for i in idx], tokenizer.pad_token_id)
            if cache is not None:
                extra[cache_argument(model)] = repeated_cache(cache, len(idx))
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=settings.max_new_tokens,
                do_sample=sampling, pad_token_id=tokenizer.pad_token_id, **extra,
            )
            new = out[:, ids.shape[1]:]  # (b, new tokens)
            for i, row in zip(idx, new):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if stats is not None:
                stats.new_tokens += int((new != tokenizer.pad_token_id).sum())
            progress.advance(len(idx))
    finally:
        progress.close()
        model.train(was_training)
    if stats is not None:
        stats.prompts += len(texts)
        stats.seconds += time.perf_counter() - started
    return answers
