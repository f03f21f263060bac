"""The post-hoc fine-tune of arXiv 2406.10630: the global adapter trained on the defense data
(`fedsafe.posthoc.data`) with the clients' SFT loop, every batch half aligned, half helpful
(L1: shuffled batches of its sample); optionally keeping the best of several checked steps
instead of the last."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from fedsafe import data, models
from fedsafe.config import Settings
from fedsafe.posthoc.data import DefenseData
from fedsafe.training import TrainResult, balanced_batches, sft


@dataclass(frozen=True)
class Check:
    step: int
    safety_rate: float  # harmful probe prompts answered safely
    benign_refusal_rate: float  # benign probe prompts refused

    @property
    def score(self) -> float:
        return self.safety_rate - self.benign_refusal_rate


class StepSelection:
    """Checks the adapter every `every` fine-tune steps (and after the last) and keeps the best:
    most harmful probe prompts refused minus benign probe prompts refused; the earliest on ties.

    How many steps repair a model without teaching it to refuse everything differs between runs:
    SmolLM2-135M, curated, 10 steps at 5e-4, shuffled batches: seed 0 ended 55 % safe with 8 % of
    benign prompts refused, seed 2 92 % safe with 35 % refused (3-5 % before the defense). The
    probe prompts are disjoint from the eval prompts and the defense data, so choosing on them
    leaves the evaluation held out. Off by default (`posthoc.select-every=0`): with 20 + 20 probe
    prompts the held-out over-refusal followed the probe's only loosely (same settings; seed 2:
    20 % instead of 35 %, seed 1: 20 % instead of 13 %).
    """

    def __init__(self, model, check: Callable[[], tuple[float, float]], every: int, last_step: int):
        self.model, self.check, self.every, self.last_step = model, check, every, last_step
        self.checks: list[Check] = []
        self.best: Check | None = None
        self.best_state: dict | None = None
        self.seconds = 0.0

    def __call__(self, step: int) -> None:
        if step % self.every and step != self.last_step:
            return
        started = time.perf_counter()
        rng = torch.random.get_rng_state()  # generation reseeds torch; training's dropout must not notice
        point = Check(step, *self.check())
        torch.random.set_rng_state(rng)
        self.seconds += time.perf_counter() - started
        self.checks.append(point)
        if self.best is None or point.score > self.best.score:
            self.best, self.best_state = point, models.adapter_state(self.model)

    def record(self) -> dict:
        return {"selected_step": self.best.step if self.best else None, "check_seconds": round(self.seconds, 1),
                "checks": [{**asdict(c), "score": round(c.score, 4)} for c in self.checks]}


def posthoc_finetune(settings: Settings, server_model, tokenizer, global_state, defense: DefenseData,
                     check: Callable[[], tuple[float, float]] | None = None) -> tuple[dict, TrainResult, dict]:
    """Fine-tune the global adapter on the defense data; returns the repaired adapter (the best
    checked one when `check` is given and `posthoc.select-every` > 0, else the last), the training
    result and the selection record."""
    models.set_adapter_state(server_model, global_state)
    aligned, helpful = (data.tokenize_pairs(tokenizer, pairs, settings.train.seq_length)
                        for pairs in (defense.aligned, defense.helpful))
    # Every batch half aligned, half helpful: with 5-10 steps, freely shuffled batches put the
    # 1:1 mix at the mercy of the draw (SmolLM2-135M, curated, 5 steps: 13-48 % of held-out benign
    # prompts refused across 3 seeds). L1 is a plain sample, shuffled as the paper trains on it.
    stream = (balanced_batches([aligned, helpful], settings.posthoc.batch_size, settings.seed)
              if defense.balanced else None)
    every, steps = settings.posthoc.select_every, settings.posthoc.steps
    selection = StepSelection(server_model, check, every, steps) if check and every else None
    result = sft(server_model, aligned + helpful, steps=steps, batch_size=settings.posthoc.batch_size,
                 lr=settings.posthoc.lr, seed=settings.seed, pad_id=tokenizer.pad_token_id, after_step=selection,
                 stream=stream, label="post-hoc fine-tune")
    if selection is None:
        return models.adapter_state(server_model), result, {}
    return selection.best_state, result, selection.record()
