"""Server SGD, plain and with momentum (FedAvgM: Hsu, Qi, Brown, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification", 2019).

`sgd` with lr 1 is FedAvg's step, global + update, bit for bit (1.0 * x == x exactly). `fedavgm` has the
parameters, defaults and update of Flower's FedAvgM strategy: the momentum starts as the first
update, then m <- server_momentum * m + update, and the global moves by server_learning_rate * m;
with server_momentum 0 it is `sgd` with lr = server_learning_rate.
"""

from __future__ import annotations

import torch

from fedsafe.optimizers.base import check_beta, check_rate
from fedsafe.optimizers.registry import register


@register("sgd")
class Sgd:
    def __init__(self, lr: float = 1.0):
        self.lr = check_rate("sgd lr", lr)

    def __call__(self, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return torch.add(global_vector, update, alpha=self.lr)  # (d,) global + lr * update


@register("fedavgm")
class FedAvgM:
    def __init__(self, server_learning_rate: float = 1.0, server_momentum: float = 0.0):
        self.server_learning_rate = check_rate("fedavgm server_learning_rate", server_learning_rate)
        self.server_momentum = check_beta("fedavgm server_momentum", server_momentum)
        self.momentum: torch.Tensor | None = None  # (d,), in the update's direction

    def __call__(self, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        step = update
        if self.server_momentum > 0.0:
            if self.momentum is None:
                self.momentum = update.clone()
            else:
                self.momentum.mul_(self.server_momentum).add_(update)
            step = self.momentum
        return torch.add(global_vector, step, alpha=self.server_learning_rate)  # (d,)

    def state_dict(self) -> dict:
        return {"momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        momentum = state["momentum"]
        self.momentum = None if momentum is None else momentum.clone()
