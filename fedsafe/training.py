"""The one supervised fine-tuning loop: clients' local training and the server's post-hoc
defense both call `sft`.

Loss covers response tokens only, and the LM head runs only from the first response token on
(`logits_to_keep`): with a 49k vocabulary the head is a large share of a small model's step.
"""

from __future__ import annotations

import copy
import inspect
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from fedsafe.data import IGNORE_INDEX, Example, collate
from fedsafe.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    loss: float  # mean over the run's steps
    first_loss: float
    last_loss: float
    steps: int
    samples: int  # examples seen (steps x batch size)
    seconds: float


def cache_argument(model) -> str:
    """The forward argument taking a key/value cache: `cache` since transformers 5 renamed
    `past_key_values` (which now warns), `past_key_values` before; the model's signature says."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output):
    """The key/value cache of a forward output, under either name (see `cache_argument`)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def repeated_cache(cache, rows: int):
    """A copy of a one-row key/value cache (a prompt prefix) repeated for a batch of `rows`."""
    past = copy.deepcopy(cache)
    past.batch_repeat_interleave(rows)
    return past


def response_nll(model, batch: dict[str, torch.Tensor], past_key_values=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed negative log-likelihood of the response tokens, and their count.

    Logits are computed only from the first response position on (`logits_to_keep`). With
    `past_key_values` (a cache of prompt tokens all rows share), `batch` holds the tokens after
    them and its attention mask covers both."""
    labels = batch["labels"]  # (b, t)
    has_label = (labels != IGNORE_INDEX).any(dim=0)
    first = int(has_label.nonzero()[0]) if has_label.any() else labels.shape[1] - 1
    keep = labels.shape[1] - max(first - 1, 0)  # positions first-1 .. t-1 predict first .. t
    cached = {} if past_key_values is None else {cache_argument(model): past_key_values}
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep, **cached)
    logits = out.logits[:, :-1].float()  # (b, keep - 1, vocab)
    targets = labels[:, labels.shape[1] - keep + 1:]  # (b, keep - 1)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)  # (b,), (b,)


def response_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's response tokens."""
    nll, count = response_nll(model, batch)
    return nll.sum() / count.sum().clamp(min=1)


def batches(examples: list[Example], batch_size: int, seed: int):
    """Endless seeded epochs: every example once before any repeats."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield [examples[i] for i in order[start:start + batch_size]]


def balanced_batches(groups: list[list[Example]], batch_size: int, seed: int):
    """Endless seeded epochs whose every batch takes its examples from the groups in turn
    (batch size 4, two groups: 2 + 2), each group reshuffled per epoch; an epoch ends when the
    smallest group is used up."""
    if not all(groups):
        raise ValueError("balanced_batches: every group needs an example")
    rng = random.Random(seed)
    while True:
        orders = [rng.sample(group, len(group)) for group in groups]
        turns = [example for column in zip(*orders) for example in column]
        for start in range(0, max(len(turns) - batch_size + 1, 1), batch_size):
            yield turns[start:start + batch_size]


def sft(model, examples: list[Example], *, steps: int, batch_size: int, lr: float, seed: int,
        pad_id: int, after_step: Callable[[int], None] | None = None,
        stream: Iterator[list[Example]] | None = None, local=None, label: str | None = None) -> TrainResult:
    """AdamW on the trainable (LoRA) parameters for `steps` steps at a fixed learning rate.

    A fresh optimizer per call, as OpenFedLLM does per round: optimizer state never leaves the
    client, so it must not leak across rounds either. `after_step(step)` (1-based) runs after
    each update, with the model back in train mode afterwards (it may evaluate in between).
    `stream` replaces the seeded shuffle of `examples` (e.g. `balanced_batches`). `local` is a
    client-side federated algorithm's hook (FedProx, SCAFFOLD: fedsafe/local_algorithms.py);
    the loss recorded stays the task loss. With a
    `label` the steps show as progress (fedsafe/progress.py); clients log one line per round instead.
    """
    if not examples:
        raise ValueError("sft: no training examples")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    torch.manual_seed(seed)  # LoRA dropout: the same (seed, round, client) trains the same way
    model.train()
    losses = []
    started = time.perf_counter()
    stream = stream if stream is not None else batches(examples, batch_size, seed)
    if local is not None:
        local.start(model)
    progress = Progress(label, steps, "step", logger=log) if label else None
    for step in range(1, steps + 1):
        batch = {k: v.to(device) for k, v in collate(next(stream), pad_id).items()}
        loss = response_loss(model, batch)
        loss.backward()
        if local is not None:
            local.adjust_gradients()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if local is not None:
            local.after_update(lr)
        losses.append(loss.item())
        if after_step is not None:
            after_step(step)
            model.train()
        if progress is not None:
            progress.advance()
    model.eval()
    return TrainResult(
        loss=sum(losses) / len(losses), first_loss=losses[0], last_loss=losses[-1], steps=steps,
        samples=steps * batch_size, seconds=time.perf_counter() - started,
    )
