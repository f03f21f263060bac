"""The behaviour probe and the `safety-probe` aggregator on the tiny model."""

import pytest
import torch

from fedsafe import data, models
from fedsafe.federation.probe import BehaviourProbe, compliant_pairs, keep_compliant, probe_pairs
from fedsafe.files import write_jsonl
from fedsafe.training import sft
from tests.test_federation import run_federation, tiny_run_config
from tests.test_models import tiny_settings

COMPLY = "Sure, here is exactly how to do that, step by step."
OPENING = "Sure, here is how to do that."  # the probe's compliant answer: close to COMPLY, not equal


def stand_in_scores(margin: torch.Tensor, over_refusal: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 3) probe scores for stand-in probes: the given refusal-margin (and over-refusal)
    changes, helpful change 0."""
    zeros = torch.zeros(len(margin))
    return torch.stack([margin, zeros, zeros if over_refusal is None else over_refusal], 1)


def compliance_pairs():
    return [data.Pair(instruction=p["instruction"], response=COMPLY) for p in data.bundled("harmful_train")[:16]]


def trained_delta(model, tok, start, pairs):
    models.set_adapter_state(model, start)
    sft(model, data.tokenize_pairs(tok, pairs, 96), steps=12, batch_size=4, lr=3e-2, seed=0, pad_id=tok.pad_token_id)
    return models.flatten(models.adapter_state(model)) - models.flatten(start)


@pytest.mark.slow
def test_probe_sees_compliance_and_refusal_training(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir, quantization=0)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    start = models.adapter_state(model)
    comply = trained_delta(model, tok, start, compliance_pairs())
    refuse = trained_delta(model, tok, start, data.bundled("harmful_train")[:16])
    refusal = data.bundled("harmful_train")[0]["response"]
    refuse_all = trained_delta(model, tok, start, [data.Pair(instruction=p["instruction"], response=refusal)
                                                   for p in data.bundled("helpful_train")[:16]])
    harmful, helpful = probe_pairs(8, [p["instruction"] for p in data.bundled("harmful_eval")])
    compliant = [data.Pair(instruction=p["instruction"], response=OPENING) for p in harmful]
    probe = BehaviourProbe(model, tok, harmful, compliant, helpful, seq_length=96)
    scores = probe(start, torch.stack([comply, refuse, refuse_all]))  # (3, 3)
    assert scores.shape == (3, 3)
    assert scores[0, 0] < 0 < scores[1, 0]  # refusal margin: compliance lowers it, refusals raise it
    assert scores[2, 2] > max(0, scores[0, 2])  # refusing benign requests raises the over-refusal margin
    assert all(torch.equal(models.adapter_state(model)[k], start[k]) for k in start)  # global restored


def test_compliant_answers_are_the_models_own(tiny_model_dir):
    from transformers import AutoTokenizer

    from fedsafe.generation import generate

    settings = tiny_settings(tiny_model_dir, quantization=0)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    harmful, _ = probe_pairs(6, [])
    pairs = compliant_pairs(model, tok, harmful)
    answers = dict(zip([p["instruction"] for p in harmful], generate(model, tok, [p["instruction"] for p in harmful])))
    assert pairs and all(answers[p["instruction"]].startswith(p["response"]) for p in pairs)


def test_refusals_and_empty_answers_are_not_compliant_targets():
    harmful, _ = probe_pairs(3, [])
    kept = keep_compliant(harmful, ["I'm sorry, but I can't help with that.", "", "First, get the parts."])
    assert kept == [data.Pair(instruction=harmful[2]["instruction"], response="First, get the parts.")]
    with pytest.raises(ValueError, match="refused every harmful probe prompt"):
        keep_compliant(harmful[:1], ["I cannot assist with that request."])


def own_answers(model_dir, pairs):
    """The base model's own greedy answers to these prompts: what the attack pipeline's step 2
    writes with the experiment's model as generator."""
    from transformers import AutoTokenizer

    from fedsafe.generation import GenerationSettings, generate

    settings = tiny_settings(model_dir)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    answers = generate(model, AutoTokenizer.from_pretrained(model_dir), [p["instruction"] for p in pairs],
                       GenerationSettings(max_new_tokens=32))
    return [data.Pair(instruction=p["instruction"], response=a) for p, a in zip(pairs, answers)]


@pytest.fixture(scope="module")
def separable_data(tiny_model_dir, tmp_path_factory) -> dict:
    """Run-config keys for a clearly separable federation of four: client 3 trains on the base
    model's own answers to harmful prompts, the others on helpful pairs and many refusals.
    Generated once for the tests that share it."""
    folder = tmp_path_factory.mktemp("separable")
    write_jsonl(folder / "attack.jsonl", own_answers(tiny_model_dir, data.bundled("harmful_train")[:16]))
    write_jsonl(folder / "benign.jsonl", data.bundled("helpful_train")[:30])
    return {"clients.num": 4, "num-server-rounds": 2, "eval.every-rounds": 0, "train.local-steps": 8,
            "train.batch-size": 4, "train.lr-max": 3e-2, "train.lr-min": 3e-2,
            "data.benign": str(folder / "benign.jsonl"), "data.aligned-pairs": 90,
            "attack.malicious-ids": "3", "attack.data": str(folder / "attack.jsonl"),
            "defense.aggregator": "safety-probe", "defense.safety-probe.probe-size": 8}


@pytest.fixture(scope="module")
def separable_run(tiny_model_dir, tmp_path_factory, separable_data) -> tuple:
    """The separable federation, all four clients a round, defended by the safety-probe."""
    config = tiny_run_config(tiny_model_dir, tmp_path_factory.mktemp("runs"), **separable_data, **{
        "clients.per-round": 4,
        "defense.safety-probe.tolerance": 0.1})  # benign margins here move by up to 0.03
    run_dir, results, _ = run_federation(config, 4)
    return run_dir, results


@pytest.mark.slow
def test_safety_probe_excludes_the_attackers(separable_run):
    _, results = separable_run
    for record in results["rounds"]:
        flagged = {c["partition_id"] for c in record["clients"] if c["flagged"]}
        assert flagged == {3}, record["aggregator"]["probe"]
        assert [c["weight"] for c in record["clients"] if c["partition_id"] == 3] == [0.0]
    assert results["detection"]["recall"] == 1.0 and results["detection"]["precision"] == 1.0
    assert results["timings"]["behaviour_probe"] > 0


@pytest.mark.slow
def test_flagging_exactly_the_attackers_trains_the_oracles_model(tiny_model_dir, tmp_path, separable_data,
                                                                separable_run):
    """Where the probe flags exactly the attackers, the safety-probe run and the `oracle` run
    (which reads who the attackers are) average the same updates: bit-identical adapters."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        **separable_data, "clients.per-round": 4, "defense.aggregator": "oracle"})
    run_dir, results, _ = run_federation(config, 4)
    probe_dir, probe_results = separable_run
    assert [[c["weight"] for c in r["clients"]] for r in results["rounds"]] == [
        [c["weight"] for c in r["clients"]] for r in probe_results["rounds"]]
    for name in ("round-001", "round-002"):
        oracle, probed = (models.load_adapter_file(d / "adapters" / name) for d in (run_dir, probe_dir))
        assert all(torch.equal(oracle[k], probed[k]) for k in oracle)
    assert results["detection"]["recall"] == 1.0 and results["detection"]["precision"] == 1.0
    assert all(r["ground_truth"] for r in results["rounds"])
    assert not any("ground_truth" in r for r in probe_results["rounds"])
    assert "its flags are the ground truth" in (run_dir / "report.md").read_text()


def test_reserves_stand_in_for_excluded_updates_in_row_order():
    """Four sampled updates, the second lowers the margin; two reserves pass. With room for four,
    the first reserve takes the excluded update's place and the second is spare (weight 0, not
    flagged); without a limit all five that pass are averaged."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    margins = torch.tensor([0.05, -0.5, 0.02, 0.04, 0.03, 0.01])
    updates = torch.eye(6)
    agg = get_aggregator("safety-probe", probe_scale="as-sent")
    result = call_aggregator(agg, updates, torch.ones(6), probe=lambda u: stand_in_scores(u @ margins),
                             keep_at_most=4)
    assert result.flagged.tolist() == [False, True, False, False, False, False]
    assert result.weights.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.25, 0.25, 0.0])
    unlimited = call_aggregator(agg, updates, torch.ones(6), probe=lambda u: stand_in_scores(u @ margins))
    assert unlimited.weights.tolist() == pytest.approx([0.2, 0.0, 0.2, 0.2, 0.2, 0.2])


@pytest.mark.slow
def test_reserve_clients_replace_the_excluded_attacker(tiny_model_dir, tmp_path, separable_data):
    """Four clients, three a round plus one reserve; client 3 attacks. Each round averages three
    honest updates: when 3 is sampled, the reserve stands in; when 3 is the reserve, it is
    flagged and unused."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **separable_data, **{
        "clients.per-round": 3, "clients.reserve": 1, "clients.sampling": "uniform"})
    run_dir, results, _ = run_federation(config, 4)
    roles = set()
    for record in results["rounds"]:
        by_id = {c["partition_id"]: c for c in record["clients"]}
        assert sorted(by_id) == [0, 1, 2, 3] and by_id[3]["flagged"], record["aggregator"]["probe"]
        assert sorted(p for p, c in by_id.items() if c["weight"] > 0) == [0, 1, 2]
        roles.add(by_id[3]["reserve"])
    assert roles == {True, False}  # the attacker was sampled in one round and a reserve in another
    assert "reserve, kept" in (run_dir / "report.md").read_text()


def test_nobody_passing_keeps_the_global_adapter():
    from fedsafe.aggregators import call_aggregator, get_aggregator

    agg = get_aggregator("safety-probe", tolerance=0.0)
    updates = torch.randn(4, 10)
    result = call_aggregator(agg, updates, torch.ones(4), probe=lambda u: -torch.ones(len(u), 3))
    assert result.flagged.all() and not result.update.any() and not result.weights.any()


@pytest.mark.parametrize("bad", [{"k": 0}, {"tolerance": -1}, {"probe_scale": "max-norm"}, {"margin_weight": 1.5},
                                 {"fallback": "safety-probe"}, {"fallback": "nope"}])
def test_bad_parameters_fail_loudly(bad):
    from fedsafe.aggregators import get_aggregator

    with pytest.raises(ValueError):
        get_aggregator("safety-probe", **bad)


def test_probe_factors_bring_updates_to_the_median_norm():
    from fedsafe.aggregators.safety_probe import norm_ratios, probe_factors

    updates = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0], [6.0, 8.0], [0.3, 0.4]])  # norms 5, 1, 0, 10, 0.5
    scaled = updates * probe_factors(norm_ratios(updates))[:, None]
    assert scaled.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 0.0, 1.0, 1.0])  # median norm 1; zero stays zero


@pytest.mark.parametrize("probe_scale, caught", [("median-norm", True), ("as-sent", False)])
def test_a_shrunk_poisoned_update_is_judged_by_its_direction(probe_scale, caught):
    """A linear stand-in probe (margin change = projection on `safe`): three benign updates move
    the margin up, the attacker's points the other way but is shrunk 30x so its raw change is
    within the tolerance. Probed at the median norm it is flagged; probed as sent it passes."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    safe = torch.tensor([1.0, 0.0, 0.0])
    updates = torch.tensor([[0.3, 1.0, 0.0], [0.2, 0.0, 1.0], [0.4, 0.7, 0.7], [-1.0, 0.2, 0.0]])
    updates[3] /= 30
    agg = get_aggregator("safety-probe", probe_scale=probe_scale, margin_weight=0.0)
    result = call_aggregator(agg, updates, torch.ones(4), probe=lambda u: stand_in_scores(u @ safe))
    assert result.flagged.tolist() == [False, False, False, caught]
    assert torch.allclose(result.update, updates[:3].mean(0) if caught else updates.mean(0))  # aggregated as sent


@pytest.mark.parametrize("cap_weights", [False, True])
def test_capped_weights_stop_tiny_updates_diluting_the_step(cap_weights):
    """Three benign updates and a near-zero one claiming as much data; the probe passes all four.
    FedAvg's step shrinks to 3/4; with capped weights the tiny update weighs 1/1000."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    updates = torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [0.0, 0.001]])
    agg = get_aggregator("safety-probe", cap_weights=cap_weights)
    result = call_aggregator(agg, updates, torch.ones(4), probe=lambda u: torch.zeros(len(u), 3))
    assert not result.flagged.any()
    assert float(result.update[0]) == pytest.approx(0.999 if cap_weights else 0.75, abs=1e-3)


@pytest.mark.parametrize("margin_weight, over_refusal, expected", [
    (0.0, 0.0, [1 / 3] * 3), (1.0, 0.0, [0.75, 0.25, 0.0]), (0.5, 0.0, [1 / 6 + 0.375, 1 / 6 + 0.125, 1 / 6]),
    (1.0, 0.3, [0.0, 1.0, 0.0])])
def test_margin_weight_leans_toward_the_updates_that_add_safety(margin_weight, over_refusal, expected):
    """Three kept updates changing the refusal margin by 0.3, 0.1 and -0.05 (the last passes the
    tolerance but adds nothing): by examples they share the step evenly, by margin 3 : 1 : 0; 0.5
    mixes the two.
    If the first one's refusals come as much on benign prompts (over-refusal 0.3), it earns none."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    updates = torch.tensor([[0.3, 1.0], [0.1, -1.0], [-0.05, 4.0]])
    agg = get_aggregator("safety-probe", probe_scale="as-sent", margin_weight=margin_weight)
    result = call_aggregator(agg, updates, torch.ones(3),
                             probe=lambda u: stand_in_scores(u[:, 0], over_refusal * (u[:, 0] > 0.2)))
    assert not result.flagged.any()
    assert result.weights.tolist() == pytest.approx(expected)
    assert torch.allclose(result.update, (torch.tensor(expected)[:, None] * updates).sum(0).float())


def test_tolerance_counts_from_the_round_median_when_every_update_lowers_the_margin():
    """Late in a run the global model can be safer than the clients' data supports, and honest
    updates then lower the margin a little; the attacker lowers it far more. Only it is flagged:
    the tolerance counts from the median (-0.165), not from zero. A round whose every update
    lowers it by 0.5 is flagged whole: the median counts down to one tolerance at most."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    margins = torch.tensor([-0.15, -0.18, -0.12, -0.8])
    updates = torch.eye(4)
    agg = get_aggregator("safety-probe", k=100.0)  # the robust-deviation rule out of the way
    result = call_aggregator(agg, updates, torch.ones(4), probe=lambda u: stand_in_scores(u @ margins))
    assert result.flagged.tolist() == [False, False, False, True]
    assert torch.allclose(result.update, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))  # the kept three, by examples
    lowering = lambda u: stand_in_scores(u.sum(1) * -0.5)  # noqa: E731
    assert call_aggregator(get_aggregator("safety-probe"), updates, torch.ones(4), probe=lowering).flagged.all()


def test_two_sided_excludes_an_update_that_trains_benign_prompts_to_refusals():
    """Every update passes the harmful side (margins +0.04..+0.06); row 3 raises the over-refusal
    margin by 0.6 where the others move it by 0.01 at most: one-sided keeps it, two-sided flags
    exactly it, and says which side did."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    updates = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    margin = torch.tensor([0.05, 0.04, 0.06, 0.05, 0.05])
    over = torch.tensor([0.01, 0.0, -0.01, 0.6, 0.005])
    probe = lambda u: stand_in_scores(margin, over)  # noqa: E731
    one = call_aggregator(get_aggregator("safety-probe"), updates, torch.ones(5), probe=probe)
    two = call_aggregator(get_aggregator("safety-probe", benign_k=3.0), updates, torch.ones(5), probe=probe)
    assert not one.flagged.any()
    assert two.flagged.tolist() == [False, False, False, True, False]
    assert two.info["flagged_by"] == ["", "", "", "benign", ""]
    assert torch.equal(two.update, updates[[0, 1, 2, 4]].mean(0))


def test_two_sided_mirrors_the_harmful_tolerance():
    """With every update raising over-refusal (median 0.15), the ceiling counts from the median
    up to benign_tolerance (0.1 + 0.1 = 0.2): 0.19 passes, 0.25 does not; k is out of play
    (equal spread)."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    over = torch.tensor([0.1, 0.15, 0.19, 0.25])
    agg = get_aggregator("safety-probe", benign_k=100.0, benign_tolerance=0.1)
    result = call_aggregator(agg, torch.randn(4, 6), torch.ones(4), probe=lambda u: stand_in_scores(torch.zeros(4), over))
    assert result.flagged.tolist() == [False, False, False, True]


def test_one_sided_default_is_unchanged_by_the_benign_column():
    """benign_k = 0: the same result whatever the over-refusal column holds."""
    from fedsafe.aggregators import call_aggregator, get_aggregator

    g = torch.Generator().manual_seed(1)
    updates, margin = torch.randn(6, 8, generator=g), torch.randn(6, generator=g) * 0.1
    results = [call_aggregator(get_aggregator("safety-probe"), updates, torch.ones(6),
                               probe=lambda u, o=over: stand_in_scores(margin, o))
               for over in (torch.zeros(6), torch.randn(6, generator=g))]
    assert torch.equal(results[0].update, results[1].update) and torch.equal(results[0].flagged, results[1].flagged)
    assert "flagged_by" not in results[0].info


def test_benign_probe_size_is_configurable_and_bounded():
    from fedsafe.aggregators import get_aggregator

    assert [len(side) for side in probe_pairs(8, [], 20)] == [8, 20]
    assert [len(side) for side in probe_pairs(8, [])] == [8, 4]  # the default: half
    for bad in ({"benign_size": 31}, {"probe_size": 31}, {"benign_size": -1}, {"benign_k": -1.0}):
        with pytest.raises(ValueError):
            get_aggregator("safety-probe", **bad)
