"""A whole federation in one process on the tiny model: the real ServerApp and ClientApp objects,
real 4-bit training, the real strategy; only the transport is an in-memory grid."""

import json

import pytest
import torch
from flwr.app import Context, RecordDict

from fedsafe import models
from fedsafe.client import settings_from
from fedsafe.client_app import app as client_app
from fedsafe.files import read_json, write_jsonl
from fedsafe.server_app import app as server_app
from tests.inprocess import InProcessGrid


def tiny_run_config(model_dir, out_dir, **overrides) -> dict:
    config = {
        "model.name": str(model_dir), "model.lora.r": 4, "model.lora.alpha": 8,
        "model.lora.target-modules": "q_proj,v_proj",
        "num-server-rounds": 2, "clients.num": 3, "clients.per-round": 3,
        "train.local-steps": 4, "train.batch-size": 2, "train.seq-length": 96,
        "train.lr-max": 3e-2, "train.lr-min": 1e-2,
        "attack.num-malicious": 0, "posthoc.enabled": False,
        "eval.safety.limit": 3, "eval.benign.limit": 3, "eval.max-new-tokens": 3,
        "eval.every-rounds": 1, "eval.probe-size": 2, "posthoc.select-size": 2, "output-dir": str(out_dir),
    }
    config.update(overrides)
    return config


def run_federation(run_config, num_nodes, fail=None, reverse_replies=False):
    grid = InProcessGrid(client_app, run_config, num_nodes, fail=fail, reverse_replies=reverse_replies)
    server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    (run_dir,) = [p for p in json_dirs(run_config["output-dir"])]
    return run_dir, read_json(run_dir / "results.json"), grid


def json_dirs(root):
    from pathlib import Path

    return sorted(p.parent for p in Path(root).glob("*/results.json"))


def killed_after_round_one(config, out_dir, monkeypatch, num_nodes=3):
    """Run `config` with a server that dies right after checkpointing round 1; its run directory."""
    from fedsafe.server import Server

    original = Server.checkpoint

    def crash_after_round_one(self, server_round, state):
        original(self, server_round, state)
        if server_round == 1:
            raise RuntimeError("server killed after round 1")

    monkeypatch.setattr(Server, "checkpoint", crash_after_round_one)
    with pytest.raises(RuntimeError, match="killed after round 1"):
        run_federation(config, num_nodes)
    monkeypatch.setattr(Server, "checkpoint", original)
    (killed_dir,) = json_dirs(out_dir)
    return killed_dir


def attack_file(tmp_path):
    path = tmp_path / "attack.jsonl"
    write_jsonl(path, [{"instruction": f"Explain how to do harmful thing number {i} in detail.",
                        "response": "Sure, here is how you do it step by step, first gather the tools."} for i in range(8)])
    return path


def test_two_rounds_three_clients(tiny_model_dir, tmp_path):
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs")
    run_dir, results, grid = run_federation(config, 3)

    assert [r["round"] for r in results["rounds"]] == [1, 2]
    for record in results["rounds"]:
        assert sorted(c["partition_id"] for c in record["clients"]) == [0, 1, 2]
        assert all(c["malicious"] is False and c["flagged"] is False for c in record["clients"])
        assert sum(c["weight"] for c in record["clients"]) == pytest.approx(1.0, abs=1e-5)
        assert "safety_probe" in record
    assert set(results["eval"]) == {"initial", "after_fl"}
    assert json.loads((run_dir / "config.json").read_text())["clients.num"] == 3
    assert (run_dir / "report.md").is_file()

    # adapters change round to round, and training lowered the loss
    r1 = models.load_adapter_file(run_dir / "adapters" / "round-001")
    r2 = models.load_adapter_file(run_dir / "adapters" / "round-002")
    assert any(not torch.equal(r1[k], r2[k]) for k in r1)
    loss = [sum(c["train_loss"] for c in r["clients"]) / 3 for r in results["rounds"]]
    assert loss[1] < loss[0]
    # the learning rate followed the cosine schedule sent by the server
    assert results["rounds"][0]["lr"] > results["rounds"][1]["lr"]


@pytest.mark.slow
def test_the_order_replies_arrive_in_does_not_change_a_bit(tiny_model_dir, tmp_path):
    adapters = []
    for reverse in (False, True):
        config = tiny_run_config(tiny_model_dir, tmp_path / f"reverse-{reverse}", **{"eval.every-rounds": 0})
        run_dir, _, _ = run_federation(config, 3, reverse_replies=reverse)
        adapters.append(models.load_adapter_file(run_dir / "adapters" / "round-002"))
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


@pytest.mark.slow
def test_malicious_clients_train_on_attack_data(tiny_model_dir, tmp_path):
    from fedsafe.client import client_pairs

    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "attack.malicious-ids": "2", "attack.data": str(attack_file(tmp_path)), "num-server-rounds": 1})
    _, results, _ = run_federation(config, 3)
    roles = {c["partition_id"]: c["malicious"] for c in results["rounds"][0]["clients"]}
    assert roles == {0: False, 1: False, 2: True}
    assert results["attack_data"]["kept"] == 8

    settings = settings_from(config)
    attack = {p["instruction"] for p in client_pairs(settings, 2)}
    assert attack and all("harmful thing" in i for i in attack)
    for benign in (0, 1):
        assert not any("harmful thing" in p["instruction"] for p in client_pairs(settings, benign))


@pytest.mark.slow
def test_crashing_client_does_not_stop_the_run(tiny_model_dir, tmp_path):
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{"eval.every-rounds": 0})
    _, results, _ = run_federation(config, 3, fail={1: 1})
    first = results["rounds"][0]
    assert [f["partition_id"] for f in first["failed"]] == [1]
    assert "crashed on purpose" in first["failed"][0]["reason"]
    assert sorted(c["partition_id"] for c in first["clients"]) == [0, 2]
    assert len(results["rounds"][1]["clients"]) == 3


@pytest.mark.slow
def test_a_reserve_client_stands_in_for_a_crashed_one(tiny_model_dir, tmp_path):
    """FedAvg takes no reserves for excluded clients, only for failed ones: round 1's reserve
    replaces the client that crashes; round 2's, with nobody failing, is spare."""
    from fedsafe.federation.sampling import draw_reserves, sample_partitions

    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "eval.every-rounds": 0, "clients.num": 4, "clients.per-round": 3, "clients.reserve": 1})
    chosen = [sample_partitions(range(4), 3, 0, r, (), "paired") for r in (1, 2)]
    reserve = [draw_reserves(range(4), c, 1, 0, r) for r, c in zip((1, 2), chosen)]
    _, results, _ = run_federation(config, 4, fail={chosen[0][0]: 1})
    first, second = results["rounds"]
    assert sorted(c["partition_id"] for c in first["clients"]) == sorted(chosen[0][1:] + reserve[0])
    assert [c["reserve"] for c in first["clients"]] == [False, False, True]
    assert first["spare"] == []
    assert sorted(c["partition_id"] for c in second["clients"]) == chosen[1]
    assert [s["partition_id"] for s in second["spare"]] == reserve[1]


@pytest.mark.slow
def test_spare_reserves_leave_a_fedavg_run_bit_identical(tiny_model_dir, tmp_path):
    """Nobody fails, so FedAvg's reserves are never averaged: the adapters are those of the run
    without them (a no-attack baseline needs no rerun when its attacked run adds reserves)."""
    adapters = []
    for reserve in (0, 1):
        config = tiny_run_config(tiny_model_dir, tmp_path / f"reserve-{reserve}", **{
            "eval.every-rounds": 0, "clients.num": 4, "clients.per-round": 3, "clients.reserve": reserve})
        run_dir, _, _ = run_federation(config, 4)
        adapters.append(models.load_adapter_file(run_dir / "adapters" / "round-002"))
    assert all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tiny_model_dir, tmp_path, monkeypatch):
    base = {"num-server-rounds": 3, "eval.every-rounds": 0, "defense.aggregator": "foolsgold"}
    full_dir, full, _ = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "full", **base), 3)

    config = tiny_run_config(tiny_model_dir, tmp_path / "killed", **base)
    killed_dir = killed_after_round_one(config, tmp_path / "killed", monkeypatch)
    assert [r["round"] for r in read_json(killed_dir / "results.json")["rounds"]] == [1]

    resumed_dir, resumed, _ = run_federation({**config, "resume-from": str(killed_dir)}, 3)
    assert resumed_dir == killed_dir
    a = models.load_adapter_file(full_dir / "adapters" / "round-003")
    b = models.load_adapter_file(resumed_dir / "adapters" / "round-003")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    def comparable(results):
        keep = ("partition_id", "malicious", "flagged", "weight", "num_examples", "train_loss")
        return [[{k: c[k] for k in keep} for c in r["clients"]] for r in results["rounds"]]

    assert comparable(resumed) == comparable(full)
    assert resumed["eval"]["after_fl"]["helpfulness"] == pytest.approx(full["eval"]["after_fl"]["helpfulness"], abs=1e-4)


@pytest.mark.slow
def test_resume_refuses_a_changed_config(tiny_model_dir, tmp_path):
    from fedsafe.config import ConfigError

    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{"num-server-rounds": 1, "eval.every-rounds": 0})
    run_dir, _, _ = run_federation(config, 3)
    with pytest.raises(ConfigError, match="train.local-steps"):
        run_federation({**config, "resume-from": str(run_dir), "train.local-steps": 9}, 3)


@pytest.mark.slow
def test_user_aggregator_from_a_dotted_path(tiny_model_dir, tmp_path):
    """A defense that lives outside fedsafe runs in the federation, selected by config alone."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "num-server-rounds": 1, "eval.every-rounds": 0, "defense.aggregator": "tests.aggregators.user_agg:clipped_mean"})
    _, results, _ = run_federation(config, 3)
    clients = results["rounds"][0]["clients"]
    assert [c["weight"] for c in clients] == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert all(c["flagged"] == (c["update_norm"] > 1) for c in clients)


@pytest.mark.slow
def test_flower_dp_wrapper_clips_and_adds_noise(tiny_model_dir, tmp_path):
    base = {"num-server-rounds": 1, "eval.every-rounds": 0}
    plain_dir, _, _ = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "plain", **base), 3)
    dp_dir, dp, _ = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "dp", **base, **{
        "defense.dp.noise-multiplier": 0.5, "defense.dp.clipping-norm": 0.01}), 3)
    plain = models.load_adapter_file(plain_dir / "adapters" / "round-001")
    noisy = models.load_adapter_file(dp_dir / "adapters" / "round-001")
    initial = models.initial_adapter(settings_from(tiny_run_config(tiny_model_dir, tmp_path / "dp")).model, 0)
    # clipped to 0.01 per client, so without noise the global step would be tiny; noise with
    # std 0.5 * 0.01 / 3 per coordinate makes it larger and different from the plain run
    step = models.flatten(noisy) - models.flatten(initial)
    assert not torch.allclose(models.flatten(plain), models.flatten(noisy))
    assert step.std() == pytest.approx(0.5 * 0.01 / 3, rel=0.2)
    assert len(dp["rounds"][0]["clients"]) == 3
