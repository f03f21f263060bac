"""Data poisoning: which pairs a malicious client trains on.

Sources (`attack.data`): "generated" (the paper's two-step pipeline, cached), a file of
`{instruction, response}` pairs, or an unsafe-QA set laid out like PKU-Alignment/BeaverTails
(`prompt`, `response`, `is_safe`: only unsafe rows, one per prompt) from a file or the Hub.
Malicious clients split the attack pairs between them, so each holds its own data.
"""

from __future__ import annotations

import contextlib
import random
from functools import cache

from fedsafe import data, models
from fedsafe.attacks.generate import GenerationJob, cached_generation
from fedsafe.config import Settings

ATTACK_CACHE = "attack-data"


def unsafe_qa_pairs(rows: list[dict]) -> list[data.Pair]:
    """BeaverTails layout: keep `is_safe == False`, first response per prompt."""
    seen: set[str] = set()
    pairs = []
    for row in rows:
        safe = row.get("is_safe")
        if safe is True or str(safe).lower() == "true" or row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        pairs.append(data.Pair(instruction=row["prompt"], response=row["response"]))
    return pairs


def generation_job(settings: Settings) -> GenerationJob:
    source = settings.attack.instructions
    given: tuple[str, ...] = ()
    if source == "bundled":
        given = tuple(p["instruction"] for p in data.bundled("harmful_train"))
    elif source != "generated":
        given = tuple(p["instruction"] for p in data.load_pairs(source))
    generator = settings.model.name if settings.attack.generator == "base" else settings.attack.generator
    return GenerationJob(generator=generator, seed=settings.seed, num_samples=settings.attack.num_samples,
                         instructions=given)


@contextlib.contextmanager
def open_generator(settings: Settings):
    """The experiment's own base model (adapter switched off; the server's copy, which it
    already holds when the server generates), or another model."""
    if settings.attack.generator == "base":
        model = models.cached_lora_model(settings.model, settings.seed, models.server_dense(settings.model))
        with model.disable_adapter():
            yield model, models.cached_tokenizer(settings.model.name, settings.model.trust_remote_code)
        return
    model = models.load_base_model(settings.model, name=settings.attack.generator,
                                   dense=models.server_dense(settings.model))
    yield model, models.load_tokenizer(settings.attack.generator, settings.model.trust_remote_code)


@cache
def attack_pairs(settings: Settings) -> tuple[list[data.Pair], dict]:
    """All attack pairs of this experiment and their provenance."""
    source = settings.attack.data
    if source == "generated":
        pairs, manifest, path = cached_generation(
            generation_job(settings), models.cache_root() / ATTACK_CACHE, lambda: open_generator(settings)
        )
        return pairs, {"source": "generated", "path": str(path), **manifest}
    rows = data.load_rows(source)
    if rows and "is_safe" in rows[0]:
        pairs = unsafe_qa_pairs(rows)
    else:
        pairs = data.rows_to_pairs(rows, settings.data.instruction_column, settings.data.response_column, source)
    return pairs, {"source": source, "kept": len(pairs), "generated": len(rows)}


def malicious_pairs(settings: Settings, partition_id: int, own_benign: list[data.Pair]) -> list[data.Pair]:
    """This attacker's share of the attack pairs, plus benign pairs if `attack.benign-mix` > 0
    (the share of benign samples in the resulting set)."""
    pairs, _ = attack_pairs(settings)
    if not pairs:
        raise ValueError(f"attack.data={settings.attack.data!r} yielded no attack pairs")
    attackers = settings.attack.malicious_ids
    share = data.partition(pairs, len(attackers), settings.seed)[attackers.index(partition_id)] or pairs
    mix = settings.attack.benign_mix
    if mix <= 0:
        return share
    if mix >= 1:
        return list(own_benign)
    wanted = min(len(own_benign), round(len(share) * mix / (1 - mix)))
    mixed = share + random.Random(settings.seed + partition_id).sample(own_benign, wanted)
    random.Random(settings.seed).shuffle(mixed)
    return mixed


def attack_summary(settings: Settings) -> dict:
    """Provenance and counts of the attack data, for results.json.

    In simulation the experiment prepares the attackers' data here, once, with the model the
    server already holds; the malicious clients then read the same cache. On separate machines
    each malicious node generates (or reads) its own.
    """
    if not settings.attack.malicious_ids:
        return {"source": "none"}
    pairs, provenance = attack_pairs(settings)
    return {**provenance, "kept": len(pairs)}
