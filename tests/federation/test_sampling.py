"""Client sampling: seeded by partition id, each round's malicious share, and the paired draw
that keeps an attacked run on its no-attack run's honest clients."""

import random

import pytest

from fedsafe.federation.sampling import sample_partitions

MALICIOUS = [7, 8, 9]


def draws(mode, malicious, seed=0, rounds=range(1, 8), pool=range(10), k=4):
    return [sample_partitions(pool, k, seed, r, malicious, mode) for r in rounds]


@pytest.mark.parametrize("mode", ["uniform", "stratified", "paired"])
def test_seeded_and_independent_of_the_order_nodes_connected_in(mode):
    shuffled = list(range(10))
    random.Random(1).shuffle(shuffled)
    assert draws(mode, MALICIOUS) == draws(mode, MALICIOUS, pool=shuffled)
    assert draws(mode, MALICIOUS) != draws(mode, MALICIOUS, seed=1)
    assert len({tuple(d) for d in draws(mode, MALICIOUS)}) > 1


def test_the_no_attack_draw_is_the_one_earlier_versions_made():
    """Runs without attackers, recorded before `paired` existed, keep their clients."""
    before = [[1, 3, 4, 9], [0, 1, 2, 8], [2, 4, 5, 8], [1, 6, 7, 9], [0, 5, 6, 8], [0, 1, 4, 7], [0, 2, 6, 7]]
    assert draws("paired", []) == draws("stratified", []) == before


def test_paired_and_stratified_give_each_round_the_same_malicious_count():
    rounds = range(1, 401)
    counts = {mode: [sum(p in MALICIOUS for p in d) for d in draws(mode, MALICIOUS, rounds=rounds)]
              for mode in ("stratified", "paired")}
    assert counts["paired"] == counts["stratified"]
    assert set(counts["paired"]) == {1, 2}  # 4 * 3/10 = 1.2, rounded at random
    assert sum(counts["paired"]) / len(rounds) == pytest.approx(1.2, abs=0.06)


def test_paired_swaps_only_as_many_clients_as_the_malicious_count_needs():
    rounds = range(1, 401)
    clean = draws("paired", [], rounds=rounds)
    overlap = {}
    for mode in ("stratified", "paired"):
        attacked = draws(mode, MALICIOUS, rounds=rounds)
        if mode == "paired":
            for before, after in zip(clean, attacked):
                needed = abs(sum(p in MALICIOUS for p in after) - sum(p in MALICIOUS for p in before))
                assert len(set(after) - set(before)) == needed
        overlap[mode] = sum(len(set(a) & set(b) - set(MALICIOUS)) for a, b in zip(clean, attacked)) / len(rounds)
    assert overlap["paired"] > 2.0 > overlap["stratified"] + 0.5


def test_reserves_are_seeded_outside_the_draw_and_in_their_own_order():
    from fedsafe.federation.sampling import draw_reserves

    shuffled = list(range(10))
    random.Random(1).shuffle(shuffled)
    for r, chosen in enumerate(draws("paired", MALICIOUS), start=1):
        reserves = draw_reserves(range(10), chosen, 2, 0, r)
        assert len(reserves) == 2 and not set(reserves) & set(chosen)
        assert reserves == draw_reserves(shuffled, chosen, 2, 0, r)  # node order does not matter
    assert len({tuple(draw_reserves(range(10), [], 5, 0, r)) for r in range(1, 8)}) == 7
    assert draw_reserves(range(10), [], 5, 0, 1) != draw_reserves(range(10), [], 5, 1, 1)
    assert sorted(draw_reserves(range(6), [0, 1, 2, 3], 3, 0, 1)) == [4, 5]  # no more than are left
