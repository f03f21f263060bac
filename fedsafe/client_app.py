"""Flower ClientApp: the cached model trains the global adapter on this node's data and replies."""

from __future__ import annotations

import sys

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsafe.federation import node_worker
from fedsafe.logs import console_logging
from fedsafe.federation.transport import packed_arrays

app = ClientApp(mods=[packed_arrays])  # adapters travel as one Array (fedsafe/federation/transport.py)


def _in_ray_actor() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds, so it can sample reproducibly."""
    metrics = MetricRecord({"partition-id": _partition_id(context)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


# Deployment: this node's long-lived worker runs the handler (fedsafe/federation/node_worker.py).
@app.train(mods=[node_worker.in_node_worker("fedsafe.client_app:app", "fedsafe.client:reset_caches")])
def train(msg: Message, context: Context) -> Message:
    # Imported here: a deployment's ClientApp process only forwards to the worker (seconds saved).
    import torch

    from fedsafe import models
    from fedsafe.client import settings_from, train_locally
    from fedsafe.federation.scaffold import CONTROL

    if _in_ray_actor():
        torch.set_num_threads(1)  # Ray runs one client per core; more threads only contend
    console_logging()
    settings = settings_from(context.run_config)
    config = msg.content["config"]
    correction = msg.content.get(CONTROL)  # SCAFFOLD's c - c_i, only when it runs
    update = train_locally(
        settings, _partition_id(context), models.from_arrays(msg.content["arrays"]),
        server_round=int(config["server-round"]), lr=float(config["lr"]),
        correction=None if correction is None else models.from_arrays(correction),
    )
    metrics = MetricRecord({
        "num-examples": update.num_examples,
        "train_loss": update.result.loss,
        "train_loss_last": update.result.last_loss,
        "train_seconds": update.result.seconds,
        "update_scale": update.update_scale,
        "partition-id": _partition_id(context),
    })
    content = RecordDict({"arrays": models.to_arrays(update.state), "metrics": metrics})
    if update.control is not None:
        content[CONTROL] = models.to_arrays(update.control)
    return Message(content, reply_to=msg)
