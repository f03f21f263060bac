"""Data poisoning: which pairs a malicious client trains on.

Sources (`attack.data`): "generated" (the paper's two-step pipeline, cached; `attack.prompts`
picks fedsafe's prompts or the paper's), a file of `{instruction, response}` pairs, or an
unsafe-QA set laid out like PKU-Alignment/BeaverTails (`prompt`, `response`, `is_safe`: only
unsafe rows, one per prompt) from a file or the Hub.
Malicious clients split the attack pairs between them, so each holds its own data
(`attack.samples-per-client` each, sampled with the seed, or an equal share of all).
Where the data is generated: with `attack.generator = "base"` the server prepares it in
simulation with the model it holds anyway (the clients then read the cache); an external
generator is loaded only on the malicious clients, which generate (one process at a time) into
their cache, and the server records what it can know (`server_attack_summary`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cache

from fedsafe import data, models
from fedsafe.attacks.generate import (
    GenerationJob,
    cached_generation,
    read_manifest,
    release_memory,
)
from fedsafe.config import Settings

log = logging.getLogger(__name__)
ATTACK_CACHE = "attack-data"
ON_CLIENTS = "the malicious clients"
# External attack generators this process has loaded, by name: a node's record of what it held
# in memory (the server of a run must hold none).
generator_loads: Counter[str] = Counter()


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
                         instructions=given, prompts=settings.attack.prompts)


@contextlib.contextmanager
def open_generator(settings: Settings):
    """The experiment's own base model (adapter switched off), or another model, loaded here and
    freed on exit."""
    if settings.attack.generator == "base":
        model = models.cached_lora_model(settings.model, settings.seed, models.server_dense(settings.model))
        with model.disable_adapter():
            yield model, models.cached_tokenizer(settings.model)
        return
    name = settings.attack.generator
    log.info("attack data: loading the generator %s on this node", name)
    model = models.load_base_model(settings.model, name=name)
    generator_loads[name] += 1
    try:
        yield model, models.load_tokenizer(name, settings.model.trust_remote_code)
    finally:
        del model
        release_memory()


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
    """Provenance and counts of the attack data, generating (or reading) it in this process."""
    if not settings.attack.malicious_ids:
        return {"source": "none"}
    pairs, provenance = attack_pairs(settings)
    return {**provenance, "kept": len(pairs)}


def generated_on_clients(settings: Settings) -> bool:
    """An external generator: only a malicious client loads it."""
    attack = settings.attack
    return bool(attack.malicious_ids) and attack.data == "generated" and attack.generator != "base"


def server_attack_summary(settings: Settings) -> dict:
    """The attack data as the server records it. With generator 'base' (or a data file) the
    server prepares it here, once, with the model it already holds, and in simulation the
    malicious clients read the same cache. With an external generator the server loads nothing:
    it says where the data is generated and adds the clients' manifest from the shared cache
    once it exists (in simulation, after the first round; on separate machines, never)."""
    if not generated_on_clients(settings):
        return attack_summary(settings)
    job = generation_job(settings)
    root = models.cache_root() / ATTACK_CACHE
    record = {"source": "generated", "generated_on": ON_CLIENTS, "generator": job.generator,
              "prompts": job.prompts, "path": str(root / job.key())}
    return {**record, **(read_manifest(job, root) or {})}
