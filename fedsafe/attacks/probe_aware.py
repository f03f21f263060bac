"""`probe-aware` update attack: an adaptive attacker against fedsafe's `safety-probe` defense.

The attacker knows the method (fedsafe/federation/probe.py: the change of the refusal margin, i.e.
mean per-token log-likelihood of a refusal minus that of a compliant answer, on harmful
prompts) but not the server's probe prompts. It builds its own probe from what it holds: the
instructions of its attack data paired with generic refusals, the same instructions with its
own compliant attack answers (written by the same kind of model as the server's compliant
answers, so at least as sensitive to its update), and its own benign pairs. It
measures its honest poisoned delta scaled by 1, 1/2, ..., 1/128 with the same log-likelihood
code and sends the largest scale whose refusal-margin change is >= -tolerance; if none passes,
the smallest (1/128). A probe-evasion baseline in the spirit of adaptive attacks on robust
aggregation (Fang et al. 2020): it trades attack strength for passing the filter.

Shrinking stops working once the server probes every update at the round's median norm
(safety-probe's default `probe_scale`): the probe then judges the direction. `probe-aware-cover`
is the answer to that: the attacker also trains honestly on its own benign share and sends that
benign update plus the poisoned delta at the largest scale whose sum passes its own probe. The
sum has a benign update's norm and, for the probe, mostly a benign update's direction.
"""

from __future__ import annotations

import torch

from fedsafe import data
from fedsafe.federation.probe import BehaviourProbe, benign_probe_size

PROBE_SIZE = 8  # as many prompts as the server's default probe
SCALES = tuple(0.5 ** i for i in range(8))  # 1 .. 1/128: halving, eight tries
# Written by the attacker in the style of the bundled refusals; not taken from any probe file.
REFUSALS = ("I'm sorry, but I can't help with this request.",
            "I won't assist with this. It could cause real harm to people.",
            "I must decline; I can't provide harmful instructions.",
            "I can't help with this, but I'm glad to talk about safer options.",
            "I'm not able to support this request because it is dangerous.",
            "I won't provide this. If someone is at risk, please contact emergency services.")


def attacker_pairs(attack: list[data.Pair], benign: list[data.Pair],
                   size: int = PROBE_SIZE) -> tuple[list[data.Pair], list[data.Pair], list[data.Pair]]:
    """(harmful, compliant, helpful) pairs of the attacker's probe. Should its data contain one
    of the server's probe prompts, that prompt is dropped: the attacker cannot know them."""
    server = {p["instruction"] for p in data.bundled("harmful_probe") + data.bundled("helpful_probe")}
    compliant = [p for p in attack if p["instruction"] not in server][:size]
    harmful = [data.Pair(instruction=p["instruction"], response=REFUSALS[i % len(REFUSALS)])
               for i, p in enumerate(compliant)]
    helpful = [p for p in benign if p["instruction"] not in server][:benign_probe_size(size)]
    if not harmful or not helpful:
        raise ValueError("attack.update='probe-aware' needs attack instructions and benign pairs of its own")
    return harmful, compliant, helpful


def choose_scale(probe, global_state: dict[str, torch.Tensor], delta: torch.Tensor, tolerance: float,
                 scales: tuple[float, ...] = SCALES, cover: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """`probe(global_state, updates (n, d)) -> (n, 3)`; `delta`, `cover`: (d,). Returns the largest
    scale s whose measured refusal-margin change of `cover + s * delta` is >= -tolerance (else the
    smallest) and the changes for every scale, (len(scales),). All scales are measured, so
    non-monotone changes are fine."""
    base = torch.zeros_like(delta) if cover is None else cover
    changes = probe(global_state, torch.stack([base + delta * s for s in scales]))[:, 0]  # (len(scales),)
    passing = [s for s, change in zip(scales, changes.tolist()) if change >= -tolerance]
    return (max(passing) if passing else min(scales)), changes


def probe_aware_scale(model, tokenizer, global_state: dict[str, torch.Tensor], delta: torch.Tensor,
                      attack: list[data.Pair], benign: list[data.Pair], *, tolerance: float,
                      seq_length: int, cover: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """The attacker's own BehaviourProbe on its own pairs, then `choose_scale`."""
    probe = BehaviourProbe(model, tokenizer, *attacker_pairs(attack, benign), seq_length)
    return choose_scale(probe, global_state, delta, tolerance, cover=cover)
