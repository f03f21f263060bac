"""Poisoned replies through the real strategy: each is dropped with its reason, counted in
results.json, and the round aggregates the rest (or keeps the global adapter if too few remain)."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedsafe import models
from fedsafe.config import from_run_config
from fedsafe.aggregators import get_aggregator
from fedsafe.federation.strategy import RobustStrategy
from fedsafe.results import Recorder
from tests.inprocess import InProcessGrid, scripted_app

GLOBAL = {"a.lora_A.weight": torch.zeros(2, 3), "a.lora_B.weight": torch.zeros(3, 2)}


def reply(msg, arrays, metrics):
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = ArrayRecord({k: _array(v) for k, v in arrays.items()})
    return Message(content, reply_to=msg)


def _array(v):
    from flwr.app import Array

    return Array(np.asarray(v))


def ok(value, pid):
    return {k: np.full(v.shape, value, dtype=np.float32) for k, v in GLOBAL.items()}, {"num-examples": 10, "partition-id": pid}


POISON = {
    "nan": lambda pid: ({**ok(1.0, pid)[0], "a.lora_A.weight": np.full((2, 3), np.nan, dtype=np.float32)}, ok(1.0, pid)[1]),
    "inf": lambda pid: ({**ok(1.0, pid)[0], "a.lora_B.weight": np.full((3, 2), np.inf, dtype=np.float32)}, ok(1.0, pid)[1]),
    "shape": lambda pid: ({**ok(1.0, pid)[0], "a.lora_A.weight": np.ones((3, 3), dtype=np.float32)}, ok(1.0, pid)[1]),
    "missing-key": lambda pid: ({"a.lora_A.weight": np.ones((2, 3), dtype=np.float32)}, ok(1.0, pid)[1]),
    "zero-examples": lambda pid: (ok(1.0, pid)[0], {"num-examples": 0, "partition-id": pid}),
    "int-dtype": lambda pid: ({k: np.ones(v.shape, dtype=np.int64) for k, v in GLOBAL.items()}, ok(1.0, pid)[1]),
    "no-arrays": lambda pid: (None, ok(1.0, pid)[1]),
}
REASON = {"nan": "non-finite", "inf": "non-finite", "shape": "wrong shape", "missing-key": "wrong keys",
          "zero-examples": "num-examples", "int-dtype": "wrong dtype", "no-arrays": "no ArrayRecord"}


def run_round(tmp_path, answers, aggregator="fedavg", **params):
    n = len(answers)
    settings = from_run_config({"clients.num": n, "clients.per-round": n, "attack.num-malicious": 0,
                                "num-server-rounds": 1, "defense.aggregator": aggregator})
    recorder = Recorder(tmp_path, settings)
    strategy = RobustStrategy(settings, get_aggregator(aggregator, **params), recorder, wait_seconds=5)
    result = strategy.start(grid=InProcessGrid(scripted_app(lambda msg, pid: reply(msg, *answers[pid])), {}, n), initial_arrays=models.to_arrays(GLOBAL), num_rounds=1)
    return recorder.data["rounds"][0], models.from_arrays(result.arrays)


@pytest.mark.parametrize("poison", sorted(POISON))
def test_poisoned_reply_is_dropped_and_the_round_goes_on(tmp_path, poison):
    answers = {0: ok(1.0, 0), 1: ok(3.0, 1), 2: POISON[poison](2)}
    record, new_global = run_round(tmp_path, answers)
    assert [d["partition_id"] for d in record["dropped"]] == [2]
    assert REASON[poison] in record["dropped"][0]["reason"]
    assert sorted(c["partition_id"] for c in record["clients"]) == [0, 1]
    assert all(torch.allclose(v, torch.full_like(v, 2.0)) for v in new_global.values())  # mean of 1 and 3


def test_too_few_valid_replies_keep_the_global_adapter(tmp_path):
    answers = {i: POISON["nan"](i) for i in range(3)}
    record, new_global = run_round(tmp_path / "b", answers)
    assert record["kept_previous"] is True and len(record["dropped"]) == 3
    assert all(torch.equal(new_global[k], GLOBAL[k]) for k in GLOBAL)
