"""Defense data of the post-hoc defense (arXiv 2406.10630): after federated training the
server fine-tunes the global adapter on harmful instructions with safe responses ("aligned")
and helpful pairs. Levels (`posthoc.level`):

- curated (default): fedsafe's bundled refusals and form-matched helpful pairs (curated.py);
- L1: a seeded sample of public chat data (`posthoc.l1-source`), as the paper's Level 1
  fine-tunes on LMSYS-Chat: no generation and no 1:1 mix (its batches are plain shuffles);
- L2: an aligned off-the-shelf model writes both halves (generated.py);
- L3: as L2, written by the global model itself.
curated, L2 and L3 are mixed 1:1. Everything is deduplicated and kept apart from the eval prompts,
and every level counts what it dropped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from fedsafe import data
from fedsafe.attacks.generate import dedupe, near_duplicate, words
from fedsafe.config import Settings
from fedsafe.eval.judges import is_refusal
from fedsafe.posthoc import curated
from fedsafe.posthoc.generated import generated_pairs


@dataclass
class DefenseData:
    aligned: list[data.Pair]  # harmful instructions with safe responses (L1: the sample's refusals)
    helpful: list[data.Pair]  # benign instructions with helpful responses
    counts: dict = field(default_factory=dict)
    balanced: bool = True  # every fine-tune batch half aligned, half helpful

    @property
    def pairs(self) -> list[data.Pair]:
        return self.aligned + self.helpful


def _overlaps_eval(instruction: str, eval_words: list[set[str]]) -> bool:
    return near_duplicate(words(instruction), eval_words)


def mix_one_to_one(aligned: list[data.Pair], helpful: list[data.Pair], eval_prompts: list[str],
                   counts: dict) -> DefenseData:
    """Deduplicate, remove anything close to an eval prompt, balance 1:1 (the fine-tune's
    balanced batches do the mixing)."""
    eval_words = [words(p) for p in eval_prompts]
    dropped = counts.setdefault("dropped", {})
    aligned, dropped["aligned_duplicate"] = dedupe(aligned)
    helpful, dropped["helpful_duplicate"] = dedupe(helpful)
    before = len(aligned) + len(helpful)
    aligned = [p for p in aligned if not _overlaps_eval(p["instruction"], eval_words)]
    helpful = [p for p in helpful if not _overlaps_eval(p["instruction"], eval_words)]
    dropped["eval_overlap"] = before - len(aligned) - len(helpful)
    n = min(len(aligned), len(helpful))
    dropped["unpaired"] = len(aligned) + len(helpful) - 2 * n
    defense = DefenseData(aligned=aligned[:n], helpful=helpful[:n], counts=counts)
    counts.update(aligned=n, helpful=n)
    assert not any(_overlaps_eval(p["instruction"], eval_words) for p in defense.pairs), \
        "defense data overlaps eval prompts"
    return defense


def l1_pool(settings: Settings) -> tuple[list[data.Pair], str]:
    """`posthoc.l1-source`, or (empty) the benign clients' own pool: public chat data of the
    kind the federation trains on, refusals to harmful requests included."""
    d, source = settings.data, settings.posthoc.l1_source
    if source:  # the benign data's row filters apply; a few more rows than needed, for the skips
        keep = data.RowFilter(d.single_turn, d.language, d.drop_flagged)
        return data.load_pairs(source, d.instruction_column, d.response_column, keep=keep,
                               limit=4 * settings.posthoc.num_samples, seed=settings.seed), source
    pool = data.benign_pool(d, settings.clients.num, settings.seed)
    return pool, f"benign clients' pool (data.benign={d.benign!r} + {d.aligned_pairs} aligned pairs)"


def public_sample(settings: Settings, eval_prompts: list[str]) -> DefenseData:
    """L1: posthoc.num-samples pairs drawn in a seeded order, skipping near-duplicates and
    anything close to an eval prompt. Split for the record only: pairs whose response the rule
    judge reads as a refusal count as aligned."""
    pool, source = l1_pool(settings)
    order = list(range(len(pool)))
    random.Random(settings.seed).shuffle(order)
    eval_words = [words(p) for p in eval_prompts]
    kept: list[data.Pair] = []
    seen: list[set[str]] = []
    dropped = {"duplicate": 0, "eval_overlap": 0}
    for i in order:
        if len(kept) == settings.posthoc.num_samples:
            break
        w = words(pool[i]["instruction"])
        if near_duplicate(w, eval_words):
            dropped["eval_overlap"] += 1
        elif near_duplicate(w, seen):
            dropped["duplicate"] += 1
        else:
            kept.append(pool[i])
            seen.append(w)
    aligned = [p for p in kept if is_refusal(p["response"])]
    helpful = [p for p in kept if not is_refusal(p["response"])]
    counts = {"level": "L1", "source": source, "available": len(pool), "aligned": len(aligned),
              "helpful": len(helpful), "dropped": dropped}
    return DefenseData(aligned=aligned, helpful=helpful, counts=counts, balanced=False)


def build_defense_data(settings: Settings, server_model, tokenizer, judge, eval_prompts: list[str]) -> DefenseData:
    """The defense data of `posthoc.level`; `server_model` holds the global adapter (L3 uses it,
    L2 with generator 'base' switches it off)."""
    level = settings.posthoc.level
    if level == "L1":
        defense = public_sample(settings, eval_prompts)
    else:
        if level == "curated":
            aligned, helpful = curated.curated_pairs(settings)
            counts: dict = {"source": curated.SOURCE}
        else:
            aligned, helpful, counts = generated_pairs(settings, server_model, tokenizer, judge)
        defense = mix_one_to_one(aligned, helpful, eval_prompts, {"level": level, **counts})
    if not defense.pairs or (defense.balanced and not defense.aligned):
        raise ValueError(f"posthoc.level={level!r}: no defense pairs left to fine-tune on ({defense.counts})")
    return defense
