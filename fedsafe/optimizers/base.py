"""The server-optimizer contract: how the global adapter moves with the round's update.

A server optimizer is any callable `opt(global_vector, update) -> new_global_vector`, all three
fp32 tensors of shape (d,): the flattened global LoRA adapter, the update the aggregator chose
for this round (its `AggregationResult.update`), and the adapter for the next round. It is
called once per round that aggregates (not on a round that keeps the previous adapter), so
it counts its own steps. State (momentum, moments) lives on `self`; `state_dict()` /
`load_state_dict()` put it in the round checkpoint so a resumed run continues bit for bit.
Hyperparameters live in the constructor; no Flower types ever reach an optimizer.
"""

from __future__ import annotations

from typing import Protocol

import torch

from fedsafe.registry import plugin_name


class ServerOptimizer(Protocol):
    def __call__(self, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor: ...


def apply_optimizer(opt, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """One step of `opt`, with the contract checked on both sides: a user's optimizer that
    returns the wrong shape or non-finite values fails here, not in the next round's clients."""
    if global_vector.dim() != 1 or update.shape != global_vector.shape:
        raise ValueError(f"server optimizer: global (d,) and update (d,) expected, got "
                         f"{tuple(global_vector.shape)} and {tuple(update.shape)}")
    new = opt(global_vector, update)
    if not isinstance(new, torch.Tensor) or new.shape != global_vector.shape:
        raise TypeError(f"{plugin_name(opt)} returned {_shape(new)}; expected a tensor of shape "
                        f"{tuple(global_vector.shape)}")
    if not torch.isfinite(new).all():
        raise ValueError(f"{plugin_name(opt)} returned non-finite values")
    return new.to(global_vector.dtype)


def _shape(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


def check_rate(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_beta(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)
