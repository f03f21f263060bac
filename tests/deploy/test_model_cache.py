"""The node worker (fedsafe/federation/node_worker.py) gives the same reply as the ClientApp in process,
keeps its model across messages, swaps it for another run's, and cleans up when stopped. The
worker is a real process, stopped by PID here."""

import os
import random
import signal
import time

import pytest
import torch
from deploy_support import NUM_NODES
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from fedsafe import models
from fedsafe.federation import node_worker
from fedsafe.client import settings_from
from fedsafe.client_app import app
from fedsafe.federation.transport import unpack

pytestmark = pytest.mark.slow


def _run_config(model_dir, **overrides) -> dict:
    config = {"model.name": str(model_dir), "model.lora.r": 4, "model.lora.target-modules": "q_proj,v_proj",
              "clients.num": NUM_NODES, "clients.per-round": NUM_NODES, "train.local-steps": 2,
              "train.batch-size": 2, "train.seq-length": 96, "attack.num-malicious": 0}
    config.update(overrides)
    return config


def _train(node_id, run_config, state, server_round=1, partition_id=1) -> Message:
    """One train message through the real ClientApp, as a SuperNode's ClientApp process runs it;
    the reply unpacked as the server's PackedGrid would."""
    content = RecordDict({"arrays": models.to_arrays(state),
                          "config": ConfigRecord({"server-round": server_round, "lr": 1e-3})})
    metadata = Metadata(run_id=1, message_id=f"m{random.getrandbits(32)}", src_node_id=1, dst_node_id=node_id,
                        reply_to_message_id="", group_id=str(server_round), created_at=time.time(), ttl=3600,
                        message_type="train")
    context = Context(run_id=1, node_id=node_id, state=RecordDict(), run_config=run_config,
                      node_config={"partition-id": partition_id, "num-partitions": NUM_NODES})
    return unpack([app(Message(content=content, metadata=metadata), context)])[0]


def test_worker_replies_like_the_clientapp_and_keeps_its_model(tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDSAFE_CACHE", str(tmp_path / "cache"))
    run_config = _run_config(tiny_model_dir)
    settings = settings_from(run_config)
    initial = models.initial_adapter(settings.model, settings.seed)
    node_id = random.getrandbits(63)

    monkeypatch.setenv("FEDSAFE_NODE_WORKER", "0")  # simulation, in-process tests: the handler itself
    local = _train(node_id, run_config, initial)
    assert node_worker.worker_info(node_id) is None

    monkeypatch.setenv("FEDSAFE_NODE_WORKER", "1")
    info = None
    try:
        remote = _train(node_id, run_config, initial)
        info = node_worker.worker_info(node_id)
        assert info is not None and info["pid"] != os.getpid()

        ours, theirs = models.from_arrays(local.content["arrays"]), models.from_arrays(remote.content["arrays"])
        assert list(theirs) == list(ours)  # key order kept
        for k in ours:
            assert torch.equal(theirs[k], ours[k]), k
        mine, its = dict(local.content["metrics"]), dict(remote.content["metrics"])
        assert mine.pop("train_seconds") >= 0 and its.pop("train_seconds") >= 0
        assert its == mine
        assert remote.metadata.reply_to_message_id != ""  # a reply to the message it was given

        again = _train(node_id, run_config, theirs, server_round=2)
        assert node_worker.worker_info(node_id)["pid"] == info["pid"]  # one worker, reused
        assert not torch.equal(models.flatten(models.from_arrays(again.content["arrays"])), models.flatten(theirs))

        # a run with another seed: the worker swaps models instead of holding two
        _train(node_id, _run_config(tiny_model_dir, seed=7), initial)
        assert '"seed": 7' in node_worker.worker_info(node_id)["model"]  # the model.* keys and the seed

        # a failing handler: an exception here, which Flower turns into an error reply
        with pytest.raises(RuntimeError, match="node worker failed"):
            _train(node_id, run_config, initial, partition_id=99)
    finally:
        if info:
            os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while node_worker.socket_path(node_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not node_worker.socket_path(node_id).exists()  # SIGTERM: the worker removed its socket
