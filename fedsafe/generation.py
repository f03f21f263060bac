"""Batched chat generation with left padding, shared by attacks, post-hoc and evaluation.

Prompts are sorted by length before batching so a batch wastes little padding, and answers are
returned in the caller's order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from fedsafe.data import chat_prompt
from fedsafe.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 40
    batch_size: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass
class GenerationStats:
    prompts: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


@torch.no_grad()
def generate(model, tokenizer, instructions: list[str], settings: GenerationSettings = GenerationSettings(),
             *, system: str | None = None, stats: GenerationStats | None = None,
             label: str = "generate") -> list[str]:
    """Answer each instruction (chat template applied); greedy unless temperature > 0."""
    if not instructions:
        return []
    texts = [chat_prompt(tokenizer, x, system) for x in instructions]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    sampling = settings.temperature > 0
    extra = {"temperature": settings.temperature, "top_p": settings.top_p} if sampling else {}
    progress = Progress(label, len(order), "prompt", logger=log)
    try:
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            out = model.generate(
                **enc, max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                pad_token_id=tokenizer.pad_token_id, **extra,
            )
            new = out[:, enc["input_ids"].shape[1]:]  # (b, new tokens)
            for i, row in zip(idx, new):
                answers[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            if stats is not None:
                stats.new_tokens += int((new != tokenizer.pad_token_id).sum())
            progress.advance(len(idx))
    finally:
        progress.close()
        tokenizer.padding_side = side
        model.train(was_training)
    if stats is not None:
        stats.prompts += len(texts)
        stats.seconds += time.perf_counter() - started
    return answers
