"""SCAFFOLD's server side (Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML 2020): the server control variate c and each client's c_i, kept here
per partition because a Flower client keeps nothing between rounds.

Each train message carries the client's correction c - c_i (an ArrayRecord under CONTROL, keyed
as the adapter); each reply carries the client's new c_i. After the aggregator, the clients whose
update the round used (weight > 0, not flagged) commit theirs: c += sum(c_i+ - c_i) / N and
c_i <- c_i+, N = clients.num, as OpenFedLLM does; so c stays the mean of all N c_i (a client never
committed holds 0). An excluded client's variate is dropped with its update: it cannot steer
every other client's correction. Cost: one (d,) vector per client that ever committed, plus c.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from fedsafe import models
from fedsafe.config import Settings

CONTROL = "scaffold"  # key of the control-variate ArrayRecord in train messages and replies


class ControlVariates:
    def __init__(self, num_clients: int):
        self.num_clients = num_clients
        self.server: torch.Tensor | None = None  # c (d,); None = zeros, before the first commit
        self.clients: dict[int, torch.Tensor] = {}  # partition id -> c_i (d,)

    def correction(self, partition_id: int, d: int) -> torch.Tensor:
        """c - c_i for this client. (d,)"""
        server = self.server if self.server is not None else torch.zeros(d)
        own = self.clients.get(partition_id)
        return server.clone() if own is None else server - own

    def record(self, partition_id: int, like: dict[str, torch.Tensor]) -> ArrayRecord:
        """The correction as the train message carries it, keyed and shaped as the adapter `like`."""
        d = sum(v.numel() for v in like.values())
        return models.to_arrays(models.unflatten(self.correction(partition_id, d), like))

    def commit(self, new: dict[int, torch.Tensor]) -> None:
        """Take these clients' new c_i (d,) and move c by their summed change over N."""
        if not new:
            return
        d = next(iter(new.values())).numel()
        change = torch.zeros(d)
        for pid in sorted(new):  # a fixed order: the sum does not depend on reply arrival
            old = self.clients.get(pid)
            change += new[pid] if old is None else new[pid] - old
            self.clients[pid] = new[pid].clone()
        self.server = change / self.num_clients if self.server is None else self.server + change / self.num_clients

    def state_dict(self) -> dict:
        return {"server": self.server, "clients": {str(k): v for k, v in sorted(self.clients.items())}}

    def load_state_dict(self, state: dict) -> None:
        self.server = None if state["server"] is None else state["server"].clone()
        self.clients = {int(k): v.clone() for k, v in state["clients"].items()}


def control_variates(settings: Settings) -> ControlVariates | None:
    """The server's SCAFFOLD state when `fl.client-algorithm` is scaffold, else None."""
    return ControlVariates(settings.clients.num) if settings.fl.client_algorithm == "scaffold" else None
