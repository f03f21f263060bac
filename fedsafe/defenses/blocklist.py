"""Blocking (`defense.block-after`): a client the aggregator has flagged often enough is no
longer sampled.

A per-round rule keeps an attacker out only of the rounds it is flagged in; each time the
attacker is drawn again it takes one of the round's `clients.per-round` slots, and the round
averages fewer honest updates. Blocking hands its later slots to other clients. The flags are
counted from the recorded rounds, so a resumed run blocks the same clients.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def blocked_partitions(rounds: Iterable[dict], before_round: int, after: int) -> set[int]:
    """Partitions flagged in at least `after` of the rounds recorded before `before_round`
    (none when `after` is 0)."""
    if after <= 0:
        return set()
    flags = Counter(c["partition_id"] for r in rounds if r["round"] < before_round
                    for c in r.get("clients") or [] if c.get("flagged"))
    return {p for p, n in flags.items() if n >= after}
