"""Adaptive server optimizers: FedAdagrad, FedYogi, FedAdam (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021).

The round's update plays the pseudo-gradient: m <- beta_1 m + (1 - beta_1) update, a second
moment v per coordinate, and global <- global + eta * m / (sqrt(v) + tau). Parameters, defaults
and arithmetic are those of Flower's strategies of the same names, including FedAdam's bias
correction, which Flower takes at t + 1 for the t-th step. FedAdagrad has no momentum (beta_1 = 0,
as in Flower and the paper). The steps are counted here, not taken from the round number, so a
round that keeps the previous adapter does not advance them. State: m, v (d,) and the step.
Flower's `eta_l` (the client learning rate) has no counterpart here: clients follow train.lr-*.
"""

from __future__ import annotations

import math

import torch

from fedsafe.optimizers.base import check_beta, check_rate
from fedsafe.optimizers.registry import register


class FedOpt:
    """The shared first moment and step; subclasses update v and may rescale eta."""

    def __init__(self, eta: float, beta_1: float, beta_2: float, tau: float):
        kind = getattr(type(self), "name", "fedopt")
        self.eta = check_rate(f"{kind} eta", eta)
        self.beta_1 = check_beta(f"{kind} beta_1", beta_1)
        self.beta_2 = check_beta(f"{kind} beta_2", beta_2)
        self.tau = check_rate(f"{kind} tau", tau)
        self.m: torch.Tensor | None = None  # (d,)
        self.v: torch.Tensor | None = None  # (d,)
        self.step = 0

    def __call__(self, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        if self.m is None:
            self.m, self.v = torch.zeros_like(update), torch.zeros_like(update)
        self.step += 1
        self.m.mul_(self.beta_1).add_(update, alpha=1.0 - self.beta_1)
        self.second_moment(update)
        return torch.addcdiv(global_vector, self.m, self.v.sqrt().add_(self.tau), value=self.rate())  # (d,)

    def second_moment(self, update: torch.Tensor) -> None:
        raise NotImplementedError

    def rate(self) -> float:
        return self.eta

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.m = None if state["m"] is None else state["m"].clone()
        self.v = None if state["v"] is None else state["v"].clone()
        self.step = int(state["step"])


@register("fedadagrad")
class FedAdagrad(FedOpt):
    def __init__(self, eta: float = 0.1, tau: float = 1e-3):
        super().__init__(eta, 0.0, 0.0, tau)

    def second_moment(self, update: torch.Tensor) -> None:
        self.v.addcmul_(update, update)  # v + update^2


@register("fedyogi")
class FedYogi(FedOpt):
    def __init__(self, eta: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3):
        super().__init__(eta, beta_1, beta_2, tau)

    def second_moment(self, update: torch.Tensor) -> None:
        square = update * update
        sign = torch.sign(self.v - square)
        self.v.sub_(sign.mul_(square), alpha=1.0 - self.beta_2)  # v - (1 - b2) u^2 sign(v - u^2)


@register("fedadam")
class FedAdam(FedOpt):
    def __init__(self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3):
        super().__init__(eta, beta_1, beta_2, tau)

    def second_moment(self, update: torch.Tensor) -> None:
        self.v.mul_(self.beta_2).addcmul_(update, update, value=1.0 - self.beta_2)

    def rate(self) -> float:
        t = self.step + 1  # Flower's exponent: server_round + 1
        return self.eta * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
