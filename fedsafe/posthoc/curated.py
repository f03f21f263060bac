"""The 'curated' post-hoc level (fedsafe's own, the default): bundled harmful instructions with
refusals, and as many bundled helpful pairs matched to their form. Written for small models,
which learn surface cues from a few steps; two options aim at over-refusal: borderline benign
requests in the helpful half and (finetune.py) keeping an earlier step than the last."""

from __future__ import annotations

import random

from fedsafe import data
from fedsafe.config import Settings

SOURCE = "bundled harmful_train refusals + form-matched helpful_train (borderline_train) pairs"


def _opening(instruction: str) -> str:
    return instruction.split(maxsplit=1)[0].lower() if instruction.strip() else ""


def form_matched(helpful: list[data.Pair], harmful: list[data.Pair], rng: random.Random) -> list[data.Pair]:
    """One helpful pair per harmful one, opening with the same word where the pool allows.

    Harmful requests are mostly "How do I ..." questions; with helpful pairs drawn at random,
    a small model learns "a how-to question -> refuse" and refuses benign how-to questions too
    (SmolLM2-135M, curated defaults, seed 0: 18 % of held-out benign prompts refused; 8 % matched).
    Matching the form leaves the content as the only cue for refusing.
    """
    pool = rng.sample(helpful, len(helpful))
    by_opening: dict[str, list[data.Pair]] = {}
    for pair in pool:
        by_opening.setdefault(_opening(pair["instruction"]), []).append(pair)
    chosen: list[data.Pair | None] = []
    for pair in harmful:
        same = by_opening.get(_opening(pair["instruction"]))
        chosen.append(same.pop(0) if same else None)
    taken = {id(p) for p in chosen if p is not None}
    rest = iter(p for p in pool if id(p) not in taken)  # then any pair left, for the unmatched
    return [p for p in (c if c is not None else next(rest, None) for c in chosen) if p is not None]


def curated_pairs(settings: Settings) -> tuple[list[data.Pair], list[data.Pair]]:
    """Harmful-with-refusal pairs sampled to posthoc.num-samples, and as many helpful pairs
    matched to their form, `posthoc.borderline-share` of them borderline.

    Borderline pairs are benign requests worded like harmful ones ("How do I shoot a basketball
    ...", "a killer chocolate cake"): without them the refusals teach a small model that a verb
    like "kill" or "shoot" means refuse (SmolLM2-135M, curated at 5e-4, seed 2, without them: 18 of
    60 held-out benign prompts refused after the defense, 10 of them among the 15 borderline ones).
    With a share of 0.5 it still refused 19 (same run): in 10 steps of 4 pairs the small model does
    not learn the contrast, so the default share is 0.
    """
    rng = random.Random(settings.seed)
    n = settings.posthoc.num_samples
    harmful = data.bundled("harmful_train")
    harmful = rng.sample(harmful, min(n, len(harmful)))
    k = round(len(harmful) * settings.posthoc.borderline_share)
    contrast = form_matched(data.bundled("borderline_train"), harmful[:k], rng)
    return harmful, contrast + form_matched(data.bundled("helpful_train"), harmful[len(contrast):], rng)
