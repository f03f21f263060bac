"""Update (model) poisoning: functions on a malicious client's flattened delta, applied after
honest training on poisoned data. For comparison with the robust-aggregation literature.

- scale: delta * factor (boosting, Bhagoji et al. 2019)
- sign-flip: -factor * delta
- gaussian: noise with std = factor * rms(delta) in place of the delta
- stealthy-norm: the poisoned delta rescaled to a benign update's norm, which the attacker
  measures by also training on its own benign data (norm-bound / Krum then see nothing odd)
- probe-aware: the delta scaled down until the attacker's own behaviour probe passes;
  probe-aware-cover: the same search on its honest benign update plus the scaled delta. Both
  need the model, so they live in attacks/probe_aware.py
"""

from __future__ import annotations

import torch


def poison_delta(delta: torch.Tensor, mode: str, factor: float, *, seed: int,
                 reference_norm: float | None = None) -> torch.Tensor:
    """`delta`: (d,) float32. Returns the delta the client reports."""
    if mode == "none":
        return delta
    if mode == "scale":
        return delta * factor
    if mode == "sign-flip":
        return -factor * delta
    if mode == "gaussian":
        rms = delta.pow(2).mean().sqrt()
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(delta.shape, generator=gen) * factor * rms
    if mode == "stealthy-norm":
        if reference_norm is None:
            raise ValueError("stealthy-norm needs the benign reference norm")
        return delta * (reference_norm / max(float(delta.norm()), 1e-12))
    raise ValueError(f"attack.update={mode!r}: no such update attack")
