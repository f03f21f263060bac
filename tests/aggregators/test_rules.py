"""Hand-computed cases per rule (3-7 clients, d = 1..2); the arithmetic is in the comments."""

import math

import pytest
import torch

from fedsafe.aggregators import call_aggregator, detection_metrics, get_aggregator


def agg(name, updates, weights=None, ids=None, **params):
    updates = torch.tensor(updates, dtype=torch.float32)
    n = updates.shape[0]
    weights = torch.ones(n) if weights is None else torch.tensor(weights, dtype=torch.float32)
    return call_aggregator(get_aggregator(name, **params), updates, weights,
                           client_ids=ids if ids is not None else list(range(n)))


def close(tensor, expected, tol=1e-5):
    return torch.allclose(tensor.double(), torch.tensor(expected, dtype=torch.float64), atol=tol)


def test_fedavg_weights_by_examples():
    r = agg("fedavg", [[1, 2], [3, 4], [5, 6]], weights=[1, 1, 2])
    assert close(r.update, [3.5, 4.5])  # (1 + 3 + 2*5) / 4, (2 + 4 + 2*6) / 4
    assert close(r.weights, [0.25, 0.25, 0.5]) and not r.flagged.any()


def test_median_odd_and_even():
    r = agg("median", [[1, 10], [2, 0], [9, 5]])
    assert close(r.update, [2, 5])  # client 1 gives coordinate 0, client 2 coordinate 1
    assert close(r.weights, [0, 0.5, 0.5])
    r = agg("median", [[1, 4], [2, 3], [3, 2], [10, 1]])
    assert close(r.update, [2.5, 2.5])  # mean of the two middle values, as np.median
    assert close(r.weights, [0, 0.5, 0.5, 0])  # clients 1 and 2 are the middle pair twice
    assert close(r.scores, [math.hypot(1.5, 1.5), math.hypot(0.5, 0.5), math.hypot(0.5, 0.5), math.hypot(7.5, 1.5)])


def test_trimmed_mean_drops_k_per_side():
    rows = [[1, 0], [2, 9], [3, 3], [4, 2], [100, 1]]
    r = agg("trimmed-mean", rows, beta=0.2)  # k = int(0.2 * 5) = 1 per side
    assert close(r.update, [3, 2])  # mean(2, 3, 4); mean(3, 2, 1) after dropping 0 and 9
    # kept coordinates: c0 0, c1 1, c2 2, c3 2, c4 1 (of 6 kept values)
    assert close(r.weights, [0, 1 / 6, 2 / 6, 2 / 6, 1 / 6])
    assert close(r.scores, [1, 0.5, 0, 0, 0.5])  # fraction of coordinates trimmed
    r = agg("trimmed-mean", rows, beta=0.1)  # int(0.5) = 0: the plain mean
    assert close(r.update, [22, 3])


def test_trimmed_mean_trims_one_per_side_by_default_whatever_n():
    rows = [[1, 0], [2, 9], [3, 3], [100, 2]]
    r = agg("trimmed-mean", rows)  # trim = 1: beta = 0.1 would trim int(0.4) = 0 of 4
    assert close(r.update, [2.5, 2.5])  # mean(2, 3) after 1 and 100; mean(2, 3) after 0 and 9
    assert close(r.weights, [0, 0.25, 0.5, 0.25])  # kept: c0 none, c1 once, c2 twice, c3 once (of 4)
    assert r.info["trimmed_per_side"] == 1
    assert agg("trimmed-mean", torch.randn(20, 3).tolist()).info["trimmed_per_side"] == 1


def test_trimmed_mean_by_count():
    rows = [[1, 0], [2, 9], [3, 3], [4, 2], [100, 1]]
    r = agg("trimmed-mean", rows, trim=2)  # 2 + 2 of 5: the coordinate-wise median
    assert close(r.update, [3, 2]) and close(r.weights, [0, 0, 0.5, 0.5, 0])
    with pytest.raises(ValueError, match=r"trim=2 needs n >= 5 updates, got 4"):
        agg("trimmed-mean", rows[:4], trim=2)
    assert get_aggregator("trimmed-mean", trim=2).min_clients == 5


def test_trimmed_mean_takes_a_count_or_a_share_not_both():
    with pytest.raises(ValueError, match="not both"):
        get_aggregator("trimmed-mean", trim=2, beta=0.2)
    assert get_aggregator("trimmed-mean", trim=1, beta=0.2).per_side(10) == 2  # trim at its default: beta counts


KRUM_ROWS = [[0, 0], [1, 0], [3, 0], [5, 0], [20, 0]]
# f = 1, n - f - 2 = 2 nearest neighbours; squared distances along the line:
# c0: 1 + 9 = 10, c1: 1 + 4 = 5, c2: 4 + 4 = 8, c3: 4 + 16 = 20, c4: 225 + 289 = 514


def test_krum_picks_the_best_scored_client():
    r = agg("krum", KRUM_ROWS, num_malicious=1)
    assert close(r.scores, [10, 5, 8, 20, 514])
    assert close(r.update, [1, 0]) and close(r.weights, [0, 1, 0, 0, 0])
    assert r.flagged.tolist() == [True, False, True, True, True]


def test_multi_krum_averages_the_best_m_by_examples():
    r = agg("multi-krum", KRUM_ROWS, num_malicious=1)  # m = n - f = 4: all but c4
    assert close(r.update, [2.25, 0]) and r.flagged.tolist() == [False] * 4 + [True]
    r = agg("multi-krum", KRUM_ROWS, weights=[1, 1, 3, 1, 1], num_malicious=1, num_selected=2)
    assert close(r.update, [2.5, 0])  # c1 and c2: (1 * 1 + 3 * 3) / 4
    assert close(r.weights, [0, 0.25, 0.75, 0, 0])


def test_krum_ties_do_not_depend_on_row_order():
    rows = [[0, 0], [1, 0], [5, 0], [9, 0]]  # n = 4, f = 1: one neighbour, c0 and c1 tie at 1
    a = agg("krum", rows)
    b = agg("krum", rows[::-1])
    assert close(a.update, [1, 0]) and close(b.update, [1, 0])  # c1 is nearer to everyone


def test_krum_neighbourhood_averages_the_best_and_its_nearest():
    rows = [[0, 0], [1, 0], [3, 0], [10, 0]]
    # f = 1: n - f - 1 = 2 nearest others, L2 distances summed:
    # c0: 1 + 3 = 4, c1: 1 + 2 = 3, c2: 2 + 3 = 5, c3: 7 + 9 = 16; best c1, its nearest c0 and c2
    r = agg("krum", rows, num_malicious=1, variant="neighbourhood")
    assert close(r.scores, [4, 3, 5, 16])
    assert close(r.update, [4 / 3, 0]) and r.flagged.tolist() == [False, False, False, True]
    r = agg("krum", rows, weights=[1, 1, 2, 1], num_malicious=1, variant="neighbourhood")
    assert close(r.update, [7 / 4, 0]) and close(r.weights, [0.25, 0.25, 0.5, 0])  # (0 + 1 + 2 * 3) / 4


def test_krum_neighbourhood_differs_from_classic_krum():
    rows = [[0, 0], [1, 0], [4, 0], [6, 0], [30, 0]]
    # f = 2, n - f - 1 = 2 nearest, L2: c0 1 + 4 = 5, c1 1 + 3 = 4, c2 2 + 3 = 5, c3 2 + 5 = 7, c4 24 + 26 = 50
    r = agg("krum", rows, num_malicious=2, variant="neighbourhood")
    assert close(r.scores, [5, 4, 5, 7, 50])
    assert close(r.update, [5 / 3, 0]) and r.flagged.tolist() == [False, False, False, True, True]  # c1, c0, c2
    # classic, n - f - 2 = 1 nearest, squared: c0 and c1 tie at 1; c1 is nearer to everyone
    assert close(agg("krum", rows, num_malicious=2).update, [1, 0])


def test_krum_variant_is_checked():
    with pytest.raises(ValueError, match=r"defense.krum.variant='paper': accepted classic, neighbourhood"):
        get_aggregator("krum", variant="paper")


def test_bulyan_selects_then_trims_around_the_median():
    rows = [[0, 5], [1, -1], [3, 0], [4, 2], [8, 1], [30, 0], [-30, 0]]
    r = agg("bulyan", rows, num_malicious=1)  # theta = 5 (the five inliers), beta = 3
    # coordinate 0: 0 1 3 4 8, median 3, three closest 1 3 4 -> 8/3
    # coordinate 1: 5 -1 0 2 1, median 1, three closest 0 1 2 -> 1
    assert close(r.update, [8 / 3, 1])
    assert r.flagged.tolist() == [False] * 5 + [True, True]
    # values used: c1 once, c2 twice, c3 twice, c4 once (of 6)
    assert close(r.weights, [0, 1 / 6, 2 / 6, 2 / 6, 1 / 6, 0, 0])


def test_bulyan_needs_4f_plus_3_clients():
    with pytest.raises(ValueError, match=r"needs n >= 4f \+ 3 = 11 clients, got 10"):
        agg("bulyan", torch.randn(10, 3).tolist(), num_malicious=2)
    assert get_aggregator("bulyan", num_malicious=2).min_clients == 11


def test_norm_bound_clips_to_the_median_norm():
    rows = [[3, 4], [0, 1], [6, 8]]  # norms 5, 1, 10: median 5
    r = agg("norm-bound", rows, weights=[1, 2, 1])
    assert close(r.update, [1.5, 2.5])  # ([3, 4] + 2 * [0, 1] + [3, 4]) / 4
    assert r.flagged.tolist() == [False, False, True] and close(r.scores, [1, 1, 0.5])
    r = agg("norm-bound", rows, max_norm=1.0)  # factors 0.2, 1, 0.1
    assert close(r.update, [(0.6 + 0 + 0.6) / 3, (0.8 + 1 + 0.8) / 3])
    assert r.flagged.tolist() == [True, False, True]


def test_foolsgold_zeroes_parallel_histories():
    # a and b are parallel (cosine 1), c and d at 45 degrees to each other and to a, b.
    # v = max similarity: a 1, b 1, c .707, d .707; pardoning scales d's similarity to a and b
    # by .707 / 1 (-> .5); w = 1 - max: a 0, b 0, c .293, d .293 -> rescaled 0 0 1 1 -> logit 0 0 1 1
    rows = [[1, 0], [2, 0], [0, 1], [1, 1]]
    fg = get_aggregator("foolsgold")
    updates = torch.tensor(rows, dtype=torch.float32)
    for _ in range(2):  # a second identical round doubles every history: same cosines
        r = call_aggregator(fg, updates, torch.ones(4), client_ids=[10, 11, 12, 13])
        assert close(r.scores, [0, 0, 1, 1]) and r.flagged.tolist() == [True, True, False, False]
        assert close(r.update, [0.5, 1]) and close(r.weights, [0, 0, 0.5, 0.5])
    assert sorted(fg.state_dict()["history"]) == ["10", "11", "12", "13"]
    assert close(fg.state_dict()["history"]["11"], [4, 0])


def test_dnc_removes_the_largest_projection():
    rows = [[1, 0], [1.1, 0], [0.9, 0], [-10, 0]]
    # centered first coordinate: 2.75 2.85 2.65 -8.25; v = e1; scores are their squares
    r = agg("dnc", rows, num_malicious=1)
    assert close(r.scores, [2.75**2, 2.85**2, 2.65**2, 8.25**2], tol=1e-4)
    assert r.flagged.tolist() == [False, False, False, True] and close(r.update, [1, 0])


def test_flame_keeps_the_majority_cluster_and_clips():
    # Two tight benign pairs at +-6 degrees and one attacker pointing the other way. HDBSCAN
    # (min_cluster_size 3): the attacker leaves the cluster alone (noise); the four benign stay
    # together until the cluster dissolves into two pairs, so all four carry the cluster label.
    rows = [[1, 0.1], [1, 0.12], [1, -0.1], [1, -0.12], [-1, 0]]
    r = agg("flame", rows)
    assert r.flagged.tolist() == [False, False, False, False, True]
    bound = math.hypot(1, 0.1)  # median of the norms 1 1.005 1.005 1.007 1.007
    f = bound / math.hypot(1, 0.12)  # clip factor of the two longer benign updates
    assert close(r.update, [(1 + f + 1 + f) / 4, (0.1 + 0.12 * f - 0.1 - 0.12 * f) / 4])
    assert close(r.weights, [0.25, 0.25, 0.25, 0.25, 0])
    assert r.info["median_norm"] == pytest.approx(bound)
    assert r.info["clip_factors"] == pytest.approx([1, f, 1, f, 1], abs=1e-6)
    noisy = agg("flame", rows, noise_lambda=0.5, seed=3)
    again = agg("flame", rows, noise_lambda=0.5, seed=3)
    assert not torch.allclose(noisy.update, r.update) and torch.equal(noisy.update, again.update)


def test_residual_hand_cases():
    # y = 0 1 5 at ranks 1 2 3: inner slope medians 1.75 2.5 3.25 -> b1 = 2.5,
    # b0 = med(0 - 1.75, 1 - 5, 5 - 9.75) = -4; residuals 1.5 0 1.5 are all within Z: weights 1
    r = agg("residual", [[0], [1], [5]])
    assert close(r.update, [2]) and close(r.weights, [1 / 3] * 3) and close(r.scores, [1, 1, 1])
    # y = 0 1 2 3 100: inner medians 1 1 1 1 41 -> line y = x - 1 fits the first four exactly,
    # med|r| = 0, the outlier's standardized residual is infinite: weight 0
    r = agg("residual", [[3], [0], [100], [2], [1]])
    assert close(r.update, [1.5]) and close(r.weights, [0.25, 0.25, 0, 0.25, 0.25])
    # y = 0 1 2 4 100: b1 = 1.5, b0 = -2.5, tau = 1.4826 * 2.25 * 0.5; the outlier's weight
    # Z / |e| = 2 sqrt(.4) / (95 / (tau * sqrt(.4))) = .014 < threshold .05: dropped
    r = agg("residual", [[0], [1], [2], [4], [100]])
    assert close(r.update, [1.75]) and r.weights[4] == 0


def test_residual_matches_a_naive_reference():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 3, generator=g)
    rows[2] += 4  # one moderate outlier, so some weights are fractional
    r = agg("residual", rows.tolist())
    for col in range(3):
        assert r.update[col].item() == pytest.approx(_naive_residual(rows[:, col].tolist()), abs=1e-5)


def _naive_residual(values, lam=2.0, threshold=0.05):
    """Textbook loops: repeated median on ranks, Huber IRLS weight, weighted mean."""
    y = sorted(values)
    n = len(y)
    x = list(range(1, n + 1))

    def med(v):
        v = sorted(v)
        return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2

    inner = [med([(y[j] - y[i]) / (x[j] - x[i]) for j in range(n) if j != i]) for i in range(n)]
    b1 = med(inner)
    b0 = med([med([(x[j] * y[i] - x[i] * y[j]) / (x[j] - x[i]) for j in range(n) if j != i]) for i in range(n)])
    resid = [y[i] - b0 - b1 * x[i] for i in range(n)]
    tau = 1.4826 * (1 + 5 / (n - 1)) * med([abs(e) for e in resid])
    xbar, sxx = sum(x) / n, sum((xi - sum(x) / n) ** 2 for xi in x)
    z = lam * math.sqrt(2 / n)
    weights = []
    for i in range(n):
        e = resid[i] / (tau * math.sqrt(1 - (1 / n + (x[i] - xbar) ** 2 / sxx)))
        w = 1.0 if e == 0 else min(1.0, z / abs(e))
        weights.append(w if w >= threshold else 0.0)
    return sum(w * v for w, v in zip(weights, y)) / sum(weights)


def test_detection_metrics_hand_counted():
    m = detection_metrics([True, True, False, False, True], [True, False, True, False, True])
    assert m == {"precision": 2 / 3, "recall": 2 / 3, "tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert detection_metrics([False, False], [True, False])["precision"] == 0.0  # nothing flagged
    assert detection_metrics([False, False], [False, False])["recall"] == 1.0  # nothing to find
    assert detection_metrics([True, False], [False, False]) == {"precision": 0.0, "recall": 1.0,
                                                                 "tp": 0, "fp": 1, "fn": 0, "tn": 1}
    with pytest.raises(ValueError, match="differ in length"):
        detection_metrics([True], [True, False])
