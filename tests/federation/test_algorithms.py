"""Server optimizers and client algorithms in a whole in-process federation on the tiny model:
the default steps exactly as FedAvg did before them; SCAFFOLD with FedAdam carries its control
variates in the messages and resumes from a killed run to the same adapter, bit for bit."""

import torch

from fedsafe import models
from fedsafe.aggregators import call_aggregator, get_aggregator
from fedsafe.federation.checkpoint import load_state
from fedsafe.federation.scaffold import CONTROL, ControlVariates
from fedsafe.federation.transport import unpack_record
from fedsafe.files import read_json
from fedsafe.optimizers import get_optimizer
from tests.test_federation import killed_after_round_one, run_federation, settings_from, tiny_run_config


def test_the_default_steps_as_fedavg_did_bit_for_bit(tiny_model_dir, tmp_path):
    """fl.optimizer = sgd (lr 1), no client algorithm: the round's adapter is the global plus
    FedAvg of the replies' deltas, summed in partition order, exactly as before optimizers."""
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{"num-server-rounds": 1, "eval.every-rounds": 0})
    run_dir, results, grid = run_federation(config, 3)
    initial = models.initial_adapter(settings_from(config).model, 0)
    replies = sorted(grid.replies, key=lambda r: r.content["metrics"]["partition-id"])
    assert all(CONTROL not in r.content for r in replies) and all(CONTROL not in m.content for m in grid.sent)
    deltas = torch.stack([models.flatten(models.from_arrays(unpack_record(r.content["arrays"])))
                          - models.flatten(initial) for r in replies])
    weights = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in replies])
    expected = models.flatten(initial) + call_aggregator(get_aggregator("fedavg"), deltas, weights).update
    assert torch.equal(models.flatten(models.load_adapter_file(run_dir / "adapters" / "round-001")), expected)
    assert (results["config"]["fl.optimizer"], results["config"]["fl.client-algorithm"]) == ("sgd", "none")
    report = (run_dir / "report.md").read_text()
    assert "| server optimizer | sgd |" in report and "| client algorithm | none |" in report


def test_scaffold_with_fedadam_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    base = {"num-server-rounds": 2, "eval.every-rounds": 0, "fl.optimizer": "fedadam", "fl.fedadam.eta": 0.01,
            "fl.client-algorithm": "scaffold"}
    full_dir, full, grid = run_federation(tiny_run_config(tiny_model_dir, tmp_path / "full", **base), 3)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(train) == 6 and all(CONTROL in m.content for m in train)  # one correction per client per round
    assert [r["scaffold"]["committed"] for r in full["rounds"]] == [[0, 1, 2], [0, 1, 2]]
    assert full["rounds"][1]["scaffold"]["server_control_norm"] > 0
    assert {k: full["config"][k] for k in ("fl.optimizer", "fl.fedadam.eta", "fl.client-algorithm")} == \
        {"fl.optimizer": "fedadam", "fl.fedadam.eta": 0.01, "fl.client-algorithm": "scaffold"}
    assert "| server optimizer | fedadam (eta: 0.01) |" in (full_dir / "report.md").read_text()

    # what the checkpoint holds: the optimizer's two steps and c = the mean of the three c_i
    optimizer, controls = get_optimizer("fedadam", eta=0.01), ControlVariates(3)
    load_state(full_dir, {"optimizer": optimizer, "scaffold": controls})
    assert optimizer.step == 2 and sorted(controls.clients) == [0, 1, 2]
    assert torch.allclose(controls.server, sum(controls.clients.values()) / 3, atol=1e-7)

    config = tiny_run_config(tiny_model_dir, tmp_path / "killed", **base)
    killed_dir = killed_after_round_one(config, tmp_path / "killed", monkeypatch)
    resumed_dir, resumed, _ = run_federation({**config, "resume-from": str(killed_dir)}, 3)
    assert resumed_dir == killed_dir
    a = models.load_adapter_file(full_dir / "adapters" / "round-002")
    b = models.load_adapter_file(resumed_dir / "adapters" / "round-002")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["rounds"][1]["scaffold"] == full["rounds"][1]["scaffold"]
    assert read_json(resumed_dir / "results.json")["config"]["fl.client-algorithm"] == "scaffold"
