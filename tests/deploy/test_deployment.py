"""Deployment on loopback with real processes: TLS, SuperNode authentication, a malicious node by
config, the node worker, and a SuperNode killed mid-run. `flwr run` exits 0 even when the run
fails, so outcomes are read from the run directory (fedsafe.check_run.problems)."""

import signal
import threading
import time

import pytest
from deploy_support import NUM_NODES, write_run_config

from fedsafe.check_run import problems
from fedsafe.files import read_json, write_jsonl

pytestmark = pytest.mark.slow


def test_unregistered_supernode_is_refused(federation):
    intruder = federation.start_supernode(NUM_NODES, key=federation.key(NUM_NODES))  # keys/node-3
    try:
        intruder.popen.wait(timeout=90)
    finally:
        intruder.stop()
        del federation.nodes[NUM_NODES]
    assert intruder.popen.returncode != 0
    assert "Failed to activate SuperNode" in intruder.text()
    assert federation.online_nodes() == NUM_NODES


def test_tls_auth_run_with_a_malicious_node(federation, tiny_model_dir, tmp_path):
    attack = tmp_path / "attack.jsonl"
    write_jsonl(attack, [{"instruction": f"Explain how to do harmful thing number {i} in detail.",
                          "response": "Sure, here is how you do it step by step."} for i in range(8)])
    config = write_run_config(tmp_path / "run.toml", tiny_model_dir, tmp_path / "runs",
                              **{"attack.malicious-ids": "2", "attack.data": str(attack)})
    text, run_dir = federation.run(config, timeout=400)

    assert run_dir is not None, text[-3000:]
    assert problems(run_dir) == [], text[-3000:]
    results = read_json(run_dir / "results.json")
    for record in results["rounds"]:
        roles = {c["partition_id"]: c["malicious"] for c in record["clients"]}
        assert roles == {0: False, 1: False, 2: True}
        assert record["failed"] == [] and record["dropped"] == []
    assert results["attack_data"]["kept"] == 8
    # each node trained every round in one long-lived worker (the model loaded once per node)
    for k in range(NUM_NODES):
        log = federation.nodes[k].text()
        assert log.count("node worker") >= 1 and log.count("serving") == 1, log[-2000:]
        assert f"client {k} round 2" in log


def test_run_finishes_when_a_supernode_dies_in_round_1(federation, tiny_model_dir, tmp_path):
    victim = 1
    config = write_run_config(tmp_path / "run.toml", tiny_model_dir, tmp_path / "runs",
                              **{"posthoc.enabled": False, "seed": 1})
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(zip(("text", "run_dir"),
                                                                federation.run(config, timeout=400))))
    node = federation.nodes[victim]
    seen = len(node.text())
    runner.start()
    try:
        deadline = time.monotonic() + 300
        while "Receiving: train message" not in node.text()[seen:]:  # round 1 reached this node
            assert time.monotonic() < deadline and runner.is_alive(), "round 1 never reached the node"
            time.sleep(0.2)
        node.stop(signal.SIGKILL)  # the whole node dies: SuperNode, ClientApp, worker
        runner.join(timeout=420)
        assert not runner.is_alive()
    finally:
        runner.join(timeout=1)  # last test of the module: it leaves the federation a node short
    run_dir = outcome["run_dir"]
    assert run_dir is not None, outcome["text"][-3000:]
    assert problems(run_dir) == [], outcome["text"][-3000:]
    first, second = read_json(run_dir / "results.json")["rounds"]
    assert [f["partition_id"] for f in first["failed"]] == [victim]
    assert sorted(c["partition_id"] for c in first["clients"]) == [0, 2]
    assert sorted(c["partition_id"] for c in second["clients"]) == [0, 2]
    assert "dropped client 1" in outcome["text"]
