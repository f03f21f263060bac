"""Which clients train each round: seeded by (seed, round) and by partition id, so the same seed
samples the same clients in simulation and in deployment, whatever order nodes connected in."""

from __future__ import annotations

import random
from typing import Iterable


def sample_partitions(available: Iterable[int], k: int, seed: int, server_round: int,
                      malicious: Iterable[int] = (), mode: str = "uniform") -> list[int]:
    """Seeded, independent of node ids and of the order nodes connected in.

    `stratified`: each round's malicious count is the federation's share of k, rounded at random
    to a neighbouring integer (so its expectation is exact); uniform sampling leaves short runs
    to the luck of which clients the last rounds draw. `paired`: the same count, reached by
    swapping as few clients as it takes into or out of the draw a federation without malicious
    clients makes, so an attacked run and its no-attack run train mostly the same honest
    clients each round (a paired comparison; `stratified` draws the honest ones afresh).
    """
    pool = sorted(available)
    rng = random.Random(seed * 1_000_003 + server_round)
    k = min(k, len(pool))
    if mode == "uniform":
        return sorted(rng.sample(pool, k))
    malicious = set(malicious)
    bad = [p for p in pool if p in malicious]
    good = [p for p in pool if p not in malicious]
    expected = k * len(bad) / len(pool)
    n_bad = min(len(bad), int(expected) + (rng.random() < expected - int(expected)))
    n_bad = max(n_bad, k - len(good))
    if mode == "stratified":
        return sorted(rng.sample(bad, n_bad) + rng.sample(good, k - n_bad))
    drawn = rng.sample(pool, k)  # what the same federation draws without attackers
    drawn_bad = [p for p in drawn if p in malicious]
    drawn_good = [p for p in drawn if p not in malicious]
    if len(drawn_bad) > n_bad:
        spare = [p for p in good if p not in drawn]
        drawn_bad = rng.sample(drawn_bad, n_bad)
        drawn_good += rng.sample(spare, k - n_bad - len(drawn_good))
    elif len(drawn_bad) < n_bad:
        spare = [p for p in bad if p not in drawn]
        drawn_good = rng.sample(drawn_good, k - n_bad)
        drawn_bad += rng.sample(spare, n_bad - len(drawn_bad))
    return sorted(drawn_bad + drawn_good)


def draw_reserves(available: Iterable[int], chosen: Iterable[int], count: int, seed: int,
                  server_round: int) -> list[int]:
    """Up to `count` partitions outside `chosen`, in the seeded order they stand in. Their own RNG
    stream: adding reserves leaves the sampled clients as they were."""
    rest = sorted(set(available) - set(chosen))
    return random.Random(f"reserve:{seed}:{server_round}").sample(rest, min(count, len(rest)))
