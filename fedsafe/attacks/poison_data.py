"""Data poisoning: which pairs a malicious client trains on.

Sources (`attack.data`): "generated" (the paper's two-step pipeline, cached), a file of
`{instruction, response}` pairs, or an unsafe-QA set laid out like PKU-Alignment/BeaverTails
(`prompt`, `response`, `is_safe`: only unsafe rows, one per prompt) from a file or the Hub.
Malicious clients split the attack pairs between them, so each holds its own data
(`attack.samples-per-client` each, sampled with the seed, or an equal share of all).
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterable, Iterator
from functools import cache

from fedsafe import data, models
from fedsafe.attacks.generate import GenerationJob, cached_generation
from fedsafe.config import Settings

ATTACK_CACHE = "attack-data"


def _unsafe_qa(rows: Iterable[dict]) -> Iterator[data.Pair]:
    seen: set[str] = set()
    for row in rows:
        safe = row.get("is_safe")
        if safe is True or str(safe).lower() == "true" or row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        yield data.Pair(instruction=row["prompt"], response=row["response"])


def unsafe_qa_pairs(rows: Iterable[dict]) -> list[data.Pair]:
    """BeaverTails layout: keep `is_safe == False`, first response per prompt."""
    return list(_unsafe_qa(rows))


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
    """The experiment's own base model (adapter switched off), or another model."""
    if settings.attack.generator == "base":
        model = models.cached_lora_model(settings.model, settings.seed)
        with model.disable_adapter():
            yield model, models.cached_tokenizer(settings.model)
        return
    model = models.load_base_model(settings.model, name=settings.attack.generator)
    yield model, models.load_tokenizer(settings.attack.generator, settings.model.trust_remote_code)


def _pairs_of_rows(rows: Iterable[dict], settings: Settings) -> Iterator[data.Pair]:
    """BeaverTails rows (they have `is_safe`) as unsafe QA pairs, any other layout as data.py maps it."""
    source, d = settings.attack.data, settings.data
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    rows = itertools.chain([first], rows)
    if "is_safe" in first:
        yield from _unsafe_qa(rows)
    else:
        yield from data.iter_pairs(rows, d.instruction_column, d.response_column, source)


@cache
def attack_pairs(settings: Settings) -> tuple[list[data.Pair], dict]:
    """All attack pairs of this experiment and their provenance; with `attack.samples-per-client`,
    a seeded sample of that many per malicious client (Hub sets streamed, as benign data)."""
    source, per_client = settings.attack.data, settings.attack.samples_per_client
    wanted = len(settings.attack.malicious_ids) * per_client
    if source == "generated":
        pairs, manifest, path = cached_generation(
            generation_job(settings), models.cache_root() / ATTACK_CACHE, lambda: open_generator(settings)
        )
        if wanted:
            pairs = random.Random(settings.seed).sample(pairs, min(wanted, len(pairs)))
        provenance = {"source": "generated", "path": str(path), **manifest}
    else:
        pairs = data.sample_pairs(source, lambda rows: _pairs_of_rows(rows, settings), wanted, settings.seed)
        provenance = {"source": source, "kept": len(pairs)}
    if len(pairs) < wanted:
        more = " (raise attack.num-samples)" if source == "generated" else ""
        raise ValueError(f"attack.samples-per-client={per_client}: attack.data={source!r} gives {len(pairs)} attack "
                         f"pairs, fewer than {len(settings.attack.malicious_ids)} malicious clients x {per_client}{more}")
    return pairs, {**provenance, "samples_per_client": per_client}


def malicious_pairs(settings: Settings, partition_id: int, own_benign: list[data.Pair]) -> list[data.Pair]:
    """This attacker's share of the attack pairs (`attack.samples-per-client` of them, or an
    equal share of all), plus benign pairs if `attack.benign-mix` > 0 (the share of benign
    samples in the resulting set)."""
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
