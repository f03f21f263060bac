"""The `probe-aware` update attack: its scale search, its own probe, and a federation run."""

import pytest
import torch

from fedsafe import data, models
from fedsafe.attacks.probe_aware import PROBE_SIZE, REFUSALS, SCALES, attacker_pairs, choose_scale, probe_aware_scale
from fedsafe.federation.probe import BehaviourProbe
from fedsafe.files import write_jsonl
from tests.test_federation import run_federation, tiny_run_config
from tests.test_models import tiny_settings
from tests.test_safety_probe import COMPLY, stand_in_scores, trained_delta


def linear_probe(delta, slope):
    """A stand-in probe whose refusal-margin change is `slope` * (how much of `delta` is applied)."""
    return lambda _, updates: torch.stack([slope * updates.norm(dim=1) / delta.norm(), torch.zeros(len(updates))], 1)


def test_choose_scale_takes_the_largest_passing_scale():
    delta = torch.randn(50)
    # changes -0.1, -0.05, -0.025, -0.0125, ...: 1/8 is the first within 0.02
    scale, changes = choose_scale(linear_probe(delta, -0.1), {}, delta, tolerance=0.02)
    assert scale == 0.125 and changes.shape == (len(SCALES),)
    assert choose_scale(linear_probe(delta, 0.3), {}, delta, tolerance=0.0)[0] == 1.0  # raises the margin
    assert choose_scale(linear_probe(delta, -100.0), {}, delta, tolerance=0.02)[0] == min(SCALES)  # none pass


def test_attacker_probe_uses_its_own_prompts():
    server = data.bundled("harmful_probe")
    attack = [data.Pair(instruction=f"Explain harmful thing {i}.", response=COMPLY) for i in range(5)] + server[:2]
    benign = data.bundled("helpful_train")[:30]
    harmful, compliant, helpful = attacker_pairs(attack, benign)
    assert [p["instruction"] for p in harmful] == [p["instruction"] for p in attack[:5]]
    assert compliant == attack[:5]  # its own attack answers are its compliant targets
    assert {p["response"] for p in harmful} <= set(REFUSALS) and len(helpful) == PROBE_SIZE // 2
    with pytest.raises(ValueError):
        attacker_pairs(server, benign)  # nothing of its own left


@pytest.mark.slow
def test_probe_aware_delta_passes_its_own_probe(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = tiny_settings(tiny_model_dir)
    model = models.add_lora(models.load_base_model(settings), settings, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    start = models.adapter_state(model)
    attack = [data.Pair(instruction=p["instruction"], response=COMPLY) for p in data.bundled("harmful_train")[:16]]
    benign = data.bundled("helpful_train")[:16]
    poisoned = trained_delta(model, tok, start, attack)  # (d,) the honest poisoned delta
    tolerance = 0.02
    scale, changes = probe_aware_scale(model, tok, start, poisoned, attack, benign, tolerance=tolerance,
                                       seq_length=96)
    assert changes[0] < -tolerance  # unscaled, its own probe would flag it: the search had work to do
    assert 0 < scale < 1 and scale in SCALES
    own = BehaviourProbe(model, tok, *attacker_pairs(attack, benign), seq_length=96)
    measured = float(own(start, (scale * poisoned)[None])[0, 0])  # measured again, independently
    assert measured >= -tolerance or scale == min(SCALES), (scale, changes)
    assert all(torch.equal(models.adapter_state(model)[k], start[k]) for k in start)  # global restored


@pytest.mark.slow
def test_probe_aware_runs_in_a_federation(tiny_model_dir, tmp_path):
    """The reported update is the honest poisoned one times the scale the client replies."""
    attack = tmp_path / "attack.jsonl"
    write_jsonl(attack, [data.Pair(instruction=p["instruction"], response=COMPLY)
                         for p in data.bundled("harmful_train")[:16]])
    common = {"num-server-rounds": 1, "eval.every-rounds": 0, "attack.malicious-ids": "2",
              "attack.data": str(attack), "attack.probe-tolerance": 0.02}  # the tiny model's margins move little
    _, honest, _ = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "a", **common), 3)
    _, adaptive, _ = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "b", **common, **{
        "attack.update": "probe-aware"}), 3)
    norm = {name: {c["partition_id"]: c["update_norm"] for c in res["rounds"][0]["clients"]}
            for name, res in (("honest", honest), ("adaptive", adaptive))}
    scales = {c["partition_id"]: c["update_scale"] for c in adaptive["rounds"][0]["clients"]}  # results.json
    assert scales[0] == scales[1] == 1.0 and scales[2] in SCALES and scales[2] < 1
    assert norm["adaptive"][2] == pytest.approx(scales[2] * norm["honest"][2], rel=1e-3)
    assert norm["adaptive"][0] == pytest.approx(norm["honest"][0], rel=1e-5)


@pytest.mark.slow
def test_probe_aware_cover_sends_its_benign_update_plus_the_scaled_poison(tiny_model_dir, tmp_path):
    """The reply of a `probe-aware-cover` client is exactly its honest benign update plus the
    chosen scale times its poisoned delta (training is seeded, so both can be trained again)."""
    from fedsafe import client
    from fedsafe.client import settings_from, train_locally

    attack = tmp_path / "attack.jsonl"
    write_jsonl(attack, [data.Pair(instruction=p["instruction"], response=COMPLY)
                         for p in data.bundled("harmful_train")[:16]])
    settings = settings_from(tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "attack.malicious-ids": "2", "attack.data": str(attack), "attack.probe-tolerance": 0.02,
        "attack.update": "probe-aware-cover"}))
    start = models.adapter_state(models.cached_lora_model(settings.model, settings.seed))
    update = train_locally(settings, 2, start, server_round=1, lr=3e-2)
    sent = models.flatten(update.state) - models.flatten(start)
    poisoned, _ = client._train(settings, client.client_examples(settings, 2), start, 1, 3e-2, 2)
    benign = client._benign_delta(settings, 2, start, 1, 3e-2)
    expected = benign + update.update_scale * (models.flatten(poisoned) - models.flatten(start))
    assert update.update_scale in SCALES and update.malicious
    assert torch.allclose(sent, expected, atol=1e-6)
    assert not torch.allclose(sent, update.update_scale * (expected - benign), atol=1e-3)  # the cover is there


def test_cover_search_counts_the_benign_update():
    """`probe-aware-cover`: the margin change of cover + s * delta decides. A cover raising the
    margin by 0.3 leaves room for s <= 0.4 of a delta lowering it by 1 (tolerance 0.1): 1/4."""
    safe = torch.tensor([1.0, 0.0])
    probe = lambda _, u: stand_in_scores(u @ safe)  # noqa: E731
    delta, cover = torch.tensor([-1.0, 0.5]), torch.tensor([0.3, 1.0])
    assert choose_scale(probe, {}, delta, tolerance=0.1, cover=cover)[0] == 0.25
    assert choose_scale(probe, {}, delta, tolerance=0.1)[0] == 0.0625  # no cover: shrink to -0.0625
