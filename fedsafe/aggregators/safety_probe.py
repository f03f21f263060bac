"""`safety-probe`: exclude updates by what they do to the model's safety, not by where they lie
in parameter space (fedsafe's own defense; the paper shows parameter-space rules cannot see
this attack).

The server's behaviour probe (fedsafe/federation/probe.py) measures, for each update applied to the
global adapter, the change in refusal margin on harmful probe prompts: log-likelihood (nats per
token) of a refusal minus that of the base model's own compliant answer. Each update is probed
rescaled to the round's median update norm (`probe_scale="median-norm"`): the probe judges its
direction at a common step size, so an attacker cannot pass by shrinking its update until the
margin barely moves (the `probe-aware` attack). The update itself is aggregated as sent, by its
weight, or with `cap_weights` by at most its norm's share of the median: a tiny update claiming
a full share of data would otherwise shrink everyone's step (dilution). `margin_weight` of the
round's step is shared by the refusal margin each kept update adds on harmful prompts beyond
what it adds on benign ones (the probe's over-refusal column; times its weight, nothing if it
adds none), the rest by weight alone: the round leans toward the updates that make the model
refuse harmful requests, not every request, and an update that passes with a margin near zero
(an attacker hiding behind benign cover) counts for less. At 0 (default) it is the plain
weighted average. An update is flagged when it lowers the margin by more than `tolerance` below
zero, or below the round's median when even the median update lowers it (the global model has
moved past what the clients' data supports, and an honest update pulls it back a little; the
median counts down to -`tolerance` at most, so a round whose every update lowers the margin a
lot is still flagged), or lies more than `k` robust standard deviations (1.4826 * MAD) below
the round's median. The kept updates go to the `fallback` aggregator, at most `keep_at_most` of
them in row order: with `clients.reserve`, the strategy appends reserve clients' updates, and
the first that pass stand in for the excluded ones, so the round averages as many honest
updates as a round without attackers would. The aggregator sees only tensors and a callable:
no model, no Flower.

Two-sided (`benign_k` > 0): the same robust scheme also runs on the probe's over-refusal column
(benign prompts: refusal minus helpful answer), mirrored, so an update that trains benign
requests toward refusals (over-refusal poisoning) is excluded too: flagged when it raises that
margin by more than `benign_tolerance` above zero (above the round's median, up to
`benign_tolerance`, when even the median update raises it) or lies more than `benign_k` robust
standard deviations above the round's median. `benign_size` benign probe prompts (0: half of
`probe_size`) back that decision. At `benign_k` = 0 (default) the rule is one-sided, as before.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fedsafe.aggregators.base import AggregationResult, aggregate_kept, first_kept
from fedsafe.aggregators.registry import get_aggregator, register
from fedsafe.config.fields import PROBE_PROMPTS

PROBE_SCALES = ("median-norm", "as-sent")


def norm_ratios(updates: torch.Tensor) -> torch.Tensor:
    """(n,) each update's norm over the round's median update norm (all 1 if the median is 0)."""
    norms = updates.norm(dim=1)  # (n,)
    median = norms.quantile(0.5)
    return norms / median if median > 0 else torch.ones_like(norms)


def probe_factors(ratios: torch.Tensor) -> torch.Tensor:
    """(n,) factors that bring every non-zero update to the round's median norm, from `norm_ratios`."""
    return torch.where(ratios > 0, 1 / ratios.clamp(min=1e-12), torch.ones_like(ratios))


def robust_low(values: torch.Tensor, k: float, tolerance: float) -> torch.Tensor:
    """(n,) bool: values below -tolerance (below the round's median, down to -tolerance, when the
    median is negative) or more than k robust standard deviations (1.4826 * MAD) below the median."""
    median = values.quantile(0.5)  # the mean of the two middle values when n is even
    spread = 1.4826 * (values - median).abs().quantile(0.5)
    outlier = values < median - k * spread if spread > 0 else torch.zeros_like(values, dtype=torch.bool)
    floor = median.clamp(min=-tolerance, max=0) - tolerance  # between -2 and -1 tolerance
    return outlier | (values < floor)


def lean_toward_safety(weights: torch.Tensor, specific: torch.Tensor, kept: torch.Tensor, share: float) -> torch.Tensor:
    """(n,) `share` of the kept updates' step by weight times `specific` (the refusal margin each
    adds beyond its over-refusal, none if negative), the rest by weight; unchanged when no kept
    update adds any."""
    gained = weights * specific.clamp(min=0).to(weights.dtype)  # (n,)
    if gained[kept].sum() <= 0:
        return weights
    return (1 - share) * weights / weights[kept].sum() + share * gained / gained[kept].sum()


@register("safety-probe")
class SafetyProbe:
    needs_probe = True  # the strategy passes probe(updates (n, d)) -> scores (n, 3)
    takes_reserves = True  # and keep_at_most: the round's client count

    def __init__(self, k: float = 3.0, tolerance: float = 0.1, fallback: str = "fedavg", probe_size: int = 8,
                 probe_scale: str = "median-norm", cap_weights: bool = False, margin_weight: float = 0.0,
                 benign_k: float = 0.0, benign_tolerance: float = 0.1, benign_size: int = 0):
        if k <= 0 or tolerance < 0 or probe_size < 1:
            raise ValueError("safety-probe needs k > 0, tolerance >= 0 and probe_size >= 1")
        if benign_k < 0 or benign_tolerance < 0:
            raise ValueError("safety-probe needs benign_k >= 0 (0: one-sided) and benign_tolerance >= 0")
        for name, size in (("probe_size", probe_size), ("benign_size", benign_size)):
            if size > PROBE_PROMPTS:
                raise ValueError(f"safety-probe {name}={size}: at most {PROBE_PROMPTS} (the bundled probe prompts)")
        if benign_size < 0:
            raise ValueError("safety-probe needs benign_size >= 0 (0: half of probe_size)")
        if probe_scale not in PROBE_SCALES:
            raise ValueError(f"defense.safety-probe.probe-scale={probe_scale!r}: accepted {', '.join(PROBE_SCALES)}")
        if not 0 <= margin_weight <= 1:
            raise ValueError(f"defense.safety-probe.margin-weight={margin_weight!r}: accepted 0 to 1")
        self.margin_weight = margin_weight
        self.k, self.tolerance, self.probe_size, self.probe_scale = k, tolerance, probe_size, probe_scale
        self.cap_weights = cap_weights
        self.benign_k, self.benign_tolerance = benign_k, benign_tolerance
        self.benign_size = benign_size  # 0: the probe's default, half of probe_size
        self.fallback_name = fallback
        self.fallback = get_aggregator(fallback)
        if getattr(self.fallback, "needs_probe", False):
            raise ValueError(f"fallback={fallback!r} cannot itself need the probe")

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, *, probe,
                 keep_at_most: int | None = None) -> AggregationResult:
        ratios = norm_ratios(updates)  # (n,)
        factors = probe_factors(ratios) if self.probe_scale == "median-norm" else torch.ones(len(updates))  # (n,)
        scores = probe(updates * factors[:, None])  # (n, 3): refusal margin, helpful, over-refusal changes
        refusal = scores[:, 0].double()  # (n,)
        flagged = robust_low(refusal, self.k, self.tolerance)  # (n,) toward compliance on harmful prompts
        info = {"probe": [[round(float(v), 5) for v in row] for row in scores], "fallback": self.fallback_name,
                "probe_factors": [round(float(f), 5) for f in factors]}
        if self.benign_k > 0:  # toward refusing benign prompts: the over-refusal margin, mirrored
            over_refusing = robust_low(-scores[:, 2].double(), self.benign_k, self.benign_tolerance)  # (n,)
            info["flagged_by"] = [("harmful" if h else "") + ("+" if h and b else "") + ("benign" if b else "")
                                  for h, b in zip(flagged.tolist(), over_refusing.tolist())]
            flagged = flagged | over_refusing
        kept = first_kept(flagged, keep_at_most)
        if kept.numel() == 0:  # nobody passes: the global adapter stays as it is
            info["all_flagged"] = True
        if self.cap_weights:  # an update weighs no more than its size backs: tiny ones cannot dilute the step
            weights = weights * ratios.clamp(max=1.0)
        if self.margin_weight > 0:
            weights = lean_toward_safety(weights, refusal - scores[:, 2].double(), kept, self.margin_weight)
        result = aggregate_kept(self.fallback, updates, weights, flagged, kept)
        return replace(result, scores=refusal, info=info)
