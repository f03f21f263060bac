"""What one client does in a round, independent of Flower messages: pick its data by role,
train the shared adapter locally, and (if malicious) poison the resulting delta.

Everything expensive is cached per process: the model (models.cached_lora_model), the settings
and each partition's tokenized examples, so a Ray actor pays for them once per run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

import torch

from fedsafe import data, models
from fedsafe.attacks.poison_data import malicious_pairs
from fedsafe.attacks.poison_update import poison_delta
from fedsafe.attacks.probe_aware import probe_aware_scale
from fedsafe.config import Settings, from_run_config
from fedsafe.local_algorithms import local_algorithm, scaffold_control
from fedsafe.training import TrainResult, sft

log = logging.getLogger(__name__)


@cache
def _settings(items: tuple) -> Settings:
    return from_run_config(dict(items), check_aggregator=False)


def reset_caches() -> None:
    """Drop every per-process cache a client fills (settings, data, attack data, model,
    tokenizer): a long-lived node worker calls it before it loads another model."""
    from fedsafe.attacks.poison_data import attack_pairs

    for cached in (_settings, _benign_partitions, client_examples, _benign_examples, attack_pairs,
                   models._lora_model_and_initial_adapter, models.cached_tokenizer):
        cached.cache_clear()


def settings_from(run_config: dict) -> Settings:
    """Parsed once per process per distinct run config."""
    return _settings(tuple(sorted(run_config.items())))


@cache
def _benign_partitions(settings: Settings) -> list[list[data.Pair]]:
    pairs = data.benign_pool(settings.data, settings.clients.num, settings.seed)
    return data.partition(pairs, settings.clients.num, settings.seed)


def client_pairs(settings: Settings, partition_id: int) -> list[data.Pair]:
    """Benign clients train on their IID share; malicious ones on attack data (optionally mixed
    with their benign share for stealth)."""
    own = _benign_partitions(settings)[partition_id]
    if not settings.is_malicious(partition_id):
        return own
    return malicious_pairs(settings, partition_id, own)


@cache
def client_examples(settings: Settings, partition_id: int) -> list[data.Example]:
    tokenizer = models.cached_tokenizer(settings.model)
    return data.tokenize_pairs(tokenizer, client_pairs(settings, partition_id), settings.train.seq_length)


@dataclass(frozen=True)
class LocalUpdate:
    state: dict[str, torch.Tensor]
    result: TrainResult
    num_examples: int
    malicious: bool
    update_scale: float = 1.0  # what `probe-aware(-cover)` multiplied the poisoned delta by
    control: dict[str, torch.Tensor] | None = None  # SCAFFOLD: this client's new control variate c_i


def _train(settings: Settings, examples: list[data.Example], global_state, server_round: int, lr: float,
           partition_id: int, correction=None) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Local SFT from the global adapter, with `fl.client-algorithm`'s hook (SCAFFOLD's takes
    the server's `correction` c - c_i)."""
    model = models.cached_lora_model(settings.model, settings.seed)
    tokenizer = models.cached_tokenizer(settings.model)
    models.set_adapter_state(model, global_state)
    result = sft(
        model, examples, steps=settings.train.local_steps, batch_size=settings.train.batch_size, lr=lr,
        seed=settings.seed * 100_003 + server_round * 1_009 + partition_id, pad_id=tokenizer.pad_token_id,
        local=local_algorithm(settings, correction),
    )
    return models.adapter_state(model), result


@cache
def _benign_examples(settings: Settings, partition_id: int) -> list[data.Example]:
    """This client's own benign share, tokenized once: stealthy-norm and probe-aware-cover
    attackers train on it every round next to their attack data."""
    tokenizer = models.cached_tokenizer(settings.model)
    return data.tokenize_pairs(tokenizer, _benign_partitions(settings)[partition_id], settings.train.seq_length)


def _benign_delta(settings: Settings, partition_id: int, global_state, server_round: int,
                  lr: float, correction=None) -> torch.Tensor:
    """This client's honest update: trained on its own benign share. (d,)"""
    state, _ = _train(settings, _benign_examples(settings, partition_id), global_state, server_round, lr,
                      partition_id, correction)
    return models.flatten(state) - models.flatten(global_state)


def _probe_aware_scale(settings: Settings, partition_id: int, global_state, delta: torch.Tensor,
                       server_round: int, cover: torch.Tensor | None) -> float:
    """The attacker's own probe: the instructions of its attack data (not its benign share)."""
    own = _benign_partitions(settings)[partition_id]
    benign = {p["instruction"] for p in own}
    attack = [p for p in client_pairs(settings, partition_id) if p["instruction"] not in benign]
    scale, changes = probe_aware_scale(
        models.cached_lora_model(settings.model, settings.seed),
        models.cached_tokenizer(settings.model),
        global_state, delta, attack, own, tolerance=settings.attack.probe_tolerance,
        seq_length=settings.train.seq_length, cover=cover,
    )
    log.info("client %d round %d: probe-aware scale %g (own margin changes %s)", partition_id, server_round,
             scale, [round(c, 4) for c in changes.tolist()])
    return scale


def train_locally(settings: Settings, partition_id: int, global_state: dict[str, torch.Tensor],
                  server_round: int, lr: float, correction: dict[str, torch.Tensor] | None = None) -> LocalUpdate:
    """`correction`: SCAFFOLD's c - c_i from the server (keyed as the adapter); the reply's
    control variate comes from the training itself, before any update poisoning."""
    examples = client_examples(settings, partition_id)
    state, result = _train(settings, examples, global_state, server_round, lr, partition_id, correction)
    control = None if correction is None else {
        k: scaffold_control(global_state[k], state[k], correction[k], result.steps, lr) for k in global_state}
    malicious = settings.is_malicious(partition_id)
    mode, scale = settings.attack.update, 1.0
    if malicious and mode != "none":
        delta = models.flatten(state) - models.flatten(global_state)
        if mode.startswith("probe-aware"):  # needs the model, so not a pure function of the delta
            cover = (_benign_delta(settings, partition_id, global_state, server_round, lr, correction)
                     if mode == "probe-aware-cover" else None)
            scale = _probe_aware_scale(settings, partition_id, global_state, delta, server_round, cover)
            delta = delta * scale if cover is None else cover + delta * scale
        else:
            reference = (float(_benign_delta(settings, partition_id, global_state, server_round, lr, correction).norm())
                         if mode == "stealthy-norm" else None)
            delta = poison_delta(delta, mode, settings.attack.update_factor,
                                 seed=settings.seed * 7_919 + server_round, reference_norm=reference)
        state = models.unflatten(models.flatten(global_state) + delta, global_state)
    log.info("client %d round %d: loss %.3f in %.1fs", partition_id, server_round, result.loss, result.seconds)
    return LocalUpdate(state=state, result=result, num_examples=len(examples), malicious=malicious,
                       update_scale=scale, control=control)
