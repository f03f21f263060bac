"""The one Flower strategy that wraps every aggregator.

configure_train: learn each node's partition id once (a QUERY message), then sample
`clients.per-round` partitions with a seeded RNG, so the same seed samples the same clients in
simulation and deployment alike, plus `clients.reserve` reserve clients in a seeded draw order.
aggregate_train: replies -> checked deltas (n, d), the sampled clients' in partition order (not
arrival order, which would move the sums' rounding), then the reserves' in draw order ->
aggregator -> server optimizer (fedsafe.optimizers: the rule decides what the round's update is,
the optimizer how the global adapter moves with it) -> new global adapter, recording per client
weight, flag and ground truth. Under SCAFFOLD each message carries its client's correction and
each reply its new control variate (fedsafe/federation/scaffold.py). Reserves
stand in for sampled clients that fail and, with a rule that `takes_reserves`, for those it
excludes; the rest are spare: trained, recorded, not averaged.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsafe import models
from fedsafe.aggregators import call_aggregator
from fedsafe.aggregators.detection import detection_metrics
from fedsafe.config import Settings
from fedsafe.federation.replies import ClientUpdate, InvalidReply, check_reply
from fedsafe.federation.sampling import draw_reserves, sample_partitions
from fedsafe.federation.scaffold import CONTROL, ControlVariates
from fedsafe.optimizers import apply_optimizer, get_optimizer
from fedsafe.progress import Progress
from fedsafe.results import Recorder

log = logging.getLogger(__name__)


class RobustStrategy(FedAvg):
    def __init__(self, settings: Settings, aggregator, recorder: Recorder, *, optimizer=None,
                 controls: ControlVariates | None = None, probe=None, wait_seconds: float = 600.0,
                 first_round: int = 1):
        n = settings.clients.num
        super().__init__(fraction_train=settings.clients.per_round / n, fraction_evaluate=0.0,
                         min_train_nodes=1, min_available_nodes=1)
        self.settings = settings
        self.aggregator = aggregator
        self.optimizer = optimizer if optimizer is not None else get_optimizer("sgd")  # sgd, lr 1: FedAvg's step
        self.controls = controls  # SCAFFOLD's control variates, or None
        self.recorder = recorder
        self.probe = probe
        self.wait_seconds = wait_seconds
        self.offset = first_round - 1  # a resumed run continues the round numbering
        self.partition_of: dict[int, int] = {}  # node id -> partition id
        self.sampled: dict[int, int] = {}  # node id -> partition id, reserves included
        self.reserves: list[int] = []  # this round's reserve partitions, in draw order
        self.sent: list[Message] = []  # this round's train messages (ids set by the grid on push)
        self.global_state: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.round_started = 0.0
        self.round_lr = 0.0  # this round's client learning rate, sent and recorded
        # a line per round with the time left (the ServerApp's log is not a terminal)
        self.progress = Progress("federated rounds", settings.num_server_rounds - self.offset, "round",
                                 logger=log, every=0.0)

    def _discover(self, grid: Grid) -> None:
        """Ask new nodes for their partition id; wait (bounded) for the whole federation."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            unknown = [n for n in grid.get_node_ids() if n not in self.partition_of]
            if unknown:
                queries = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in unknown]
                for reply in grid.send_and_receive(queries, timeout=self.wait_seconds):
                    if not reply.has_error():
                        self.partition_of[reply.metadata.src_node_id] = int(reply.content["metrics"]["partition-id"])
            if len(self.partition_of) >= self.settings.clients.num or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if not self.partition_of:
            raise RuntimeError(f"no client node answered within {self.wait_seconds:.0f}s")
        if len(self.partition_of) < self.settings.clients.num:
            log.warning("only %d of clients.num=%d nodes connected; sampling from those",
                        len(self.partition_of), self.settings.clients.num)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.offset
        self.round_started = time.perf_counter()
        self._discover(grid)
        connected = set(grid.get_node_ids())
        node_of = {p: n for n, p in self.partition_of.items() if n in connected}
        if lost := sorted(p for n, p in self.partition_of.items() if n not in connected):
            log.warning("round %d: partitions %s no longer connected (their SuperNodes stopped); sampling "
                        "from the %d connected", server_round, lost, len(node_of))
        chosen = sample_partitions(node_of, self.settings.clients.per_round, self.settings.seed, server_round,
                                   self.settings.attack.malicious_ids, self.settings.clients.sampling)
        self.reserves = draw_reserves(node_of, chosen, self.settings.clients.reserve, self.settings.seed,
                                      server_round)
        self.sampled = {node_of[p]: p for p in chosen + self.reserves}
        self.global_state = models.from_arrays(arrays)
        config["server-round"] = server_round
        self.round_lr = self.settings.train.lr(server_round, self.settings.num_server_rounds)
        config["lr"] = self.round_lr
        log.info("round %d: clients %s (malicious: %s)%s, lr %.2e", server_round, chosen,
                 [p for p in chosen if self.settings.is_malicious(p)],
                 f", reserves {self.reserves}" if self.reserves else "", config["lr"])
        self.sent = [Message(self._train_content(p, arrays, config), dst_node_id=n, message_type=MessageType.TRAIN)
                     for n, p in self.sampled.items()]
        return self.sent

    def _train_content(self, partition: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """The global adapter and the round's config; under SCAFFOLD also this client's correction."""
        if self.controls is None:
            return RecordDict({"arrays": arrays, "config": config})
        return RecordDict({"arrays": arrays, "config": config, CONTROL: self.controls.record(partition, self.global_state)})

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.offset
        global_flat = models.flatten(self.global_state)
        updates: list[ClientUpdate] = []
        dropped, failed = [], []
        answered = set()
        # The grid gives each sent message its id; an error the SuperLink writes for a node that
        # stopped heartbeating comes from the SuperLink itself and names only that id.
        dst_of = {m.metadata.message_id: m.metadata.dst_node_id for m in self.sent}
        for reply in replies:
            node = reply.metadata.src_node_id
            if node not in self.sampled:
                node = dst_of.get(reply.metadata.reply_to_message_id, node)
            answered.add(node)
            pid = self.sampled.get(node, self.partition_of.get(node))
            if reply.has_error():
                failed.append({"node_id": node, "partition_id": pid, "reason": reply.error.reason})
                continue
            try:
                updates.append(check_reply(reply.content, node, pid, self.global_state, global_flat,
                                           control=None if self.controls is None else CONTROL))
            except InvalidReply as err:
                dropped.append({"node_id": node, "partition_id": pid, "reason": str(err)})
        failed += [{"node_id": n, "partition_id": p, "reason": "no reply before the timeout"}
                   for n, p in self.sampled.items() if n not in answered]
        for item in dropped + failed:
            log.warning("round %d: dropped client %s (node %s): %s", server_round, item["partition_id"],
                        item["node_id"], item["reason"])

        rank = {p: i for i, p in enumerate(self.reserves)}
        updates.sort(key=lambda u: (u.partition_id in rank, rank.get(u.partition_id, u.partition_id)))
        record = {"round": server_round, "lr": self.round_lr, "clients": [], "dropped": dropped, "failed": failed}
        if self.reserves and not getattr(self.aggregator, "takes_reserves", False):  # they stand in for failed ones
            updates, spare = updates[:self.settings.clients.per_round], updates[self.settings.clients.per_round:]
            record["spare"] = [{"partition_id": u.partition_id, "node_id": u.node_id,
                                "malicious": self.settings.is_malicious(u.partition_id)} for u in spare]
        minimum = getattr(self.aggregator, "min_clients", 1)
        new_state = self.global_state
        if len(updates) < minimum:
            log.warning("round %d: %d valid replies < %d needed; keeping the previous global adapter",
                        server_round, len(updates), minimum)
            record["kept_previous"] = True
        else:
            new_state = self._aggregate(updates, global_flat, record)
        record["seconds"] = round(time.perf_counter() - self.round_started, 2)
        self.recorder.add_round(record)
        self.progress.advance()
        metrics = MetricRecord({"valid-replies": len(updates), "dropped": len(dropped) + len(failed)})
        return models.to_arrays(new_state), metrics

    def _aggregate(self, updates: list[ClientUpdate], global_flat: torch.Tensor, record: dict) -> OrderedDict:
        stacked = torch.stack([u.delta for u in updates])  # (n, d)
        weights = torch.tensor([float(u.num_examples) for u in updates])  # (n,)
        ids = [u.partition_id for u in updates]
        malicious = [self.settings.is_malicious(p) for p in ids]  # recorded; given only to rules asking for it
        probe = None if self.probe is None else (lambda u: self.probe(self.global_state, u))
        result = call_aggregator(self.aggregator, stacked, weights, client_ids=ids, probe=probe,
                                 malicious=malicious, keep_at_most=self.settings.clients.per_round)
        scores = result.scores.tolist() if result.scores is not None else [None] * len(updates)
        for u, bad, w, flag, score in zip(updates, malicious, result.weights.tolist(), result.flagged.tolist(),
                                          scores):
            record["clients"].append({
                "partition_id": u.partition_id, "node_id": u.node_id, "malicious": bad, "flagged": bool(flag),
                "weight": round(w, 6), "score": score, "num_examples": u.num_examples,
                "train_loss": u.metrics.get("train_loss"), "update_norm": round(float(u.delta.norm()), 6),
                "update_scale": u.metrics.get("update_scale", 1.0),  # < 1: a probe-aware attacker scaled down
                "reserve": u.partition_id in self.reserves,
            })
        record["detection"] = detection_metrics(result.flagged.tolist(), malicious)
        if getattr(self.aggregator, "needs_malicious", False):  # its flags are the truth, not a detection
            record["ground_truth"] = True
        if result.info:
            record["aggregator"] = result.info
        if self.controls is not None:  # the clients whose update the round used commit their c_i
            used = {u.partition_id: u.control for u, w, flag in zip(updates, result.weights.tolist(),
                                                                    result.flagged.tolist()) if w > 0 and not flag}
            self.controls.commit(used)
            server = self.controls.server
            record["scaffold"] = {"committed": sorted(used),
                                  "server_control_norm": 0.0 if server is None else round(float(server.norm()), 6)}
        return models.unflatten(apply_optimizer(self.optimizer, global_flat, result.update), self.global_state)


def with_dp(strategy: RobustStrategy, settings: Settings):
    """Central DP with server-side fixed clipping, by Flower's own wrapper, when
    `defense.dp.noise-multiplier` > 0: it clips each client's update to
    `defense.dp.clipping-norm`, lets the aggregator run, then adds Gaussian noise."""
    if settings.defense.dp.noise_multiplier <= 0:
        return strategy
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    return DifferentialPrivacyServerSideFixedClipping(
        strategy, settings.defense.dp.noise_multiplier, settings.defense.dp.clipping_norm,
        settings.clients.per_round,
    )
