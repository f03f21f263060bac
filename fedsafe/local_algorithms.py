"""Client-side federated algorithms as hooks of the one SFT loop (`training.sft(local=...)`):
FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020) and SCAFFOLD
(Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning", ICML 2020),
both as OpenFedLLM (the paper's code) runs them on LoRA weights with AdamW.

A hook sees the trainable (LoRA) parameters: `start(model)` before the first step,
`adjust_gradients()` after each backward pass (before clipping), `after_update(lr)` after each
optimizer step. Malicious clients get the same hook as honest ones.
"""

from __future__ import annotations

import torch

from fedsafe.config import Settings


def trainable_by_key(model) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters keyed as the adapter state (`models.adapter_state`) keys them: PEFT
    saves `...lora_A.weight` for the parameter `...lora_A.<adapter name>.weight`."""
    adapter = getattr(model, "active_adapter", "default")
    return {name.replace(f".{adapter}.", "."): p for name, p in model.named_parameters() if p.requires_grad}


class FedProx:
    """The proximal term mu/2 ||w - w_global||^2 over the LoRA weights, added to the loss as its
    gradient mu (w - w_global); w_global is the adapter at the start of local training."""

    def __init__(self, mu: float):
        self.mu = mu
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def start(self, model) -> None:
        self.pairs = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    def adjust_gradients(self) -> None:
        for p, anchor in self.pairs:
            if p.grad is not None:
                p.grad.add_(p.detach() - anchor, alpha=self.mu)

    def after_update(self, lr: float) -> None:
        pass


class Scaffold:
    """SCAFFOLD's drift correction: after every step the weights move by -lr (c - c_i), `correction`
    being c - c_i as the server sent it (keyed as the adapter state); OpenFedLLM applies it the
    same way after each AdamW step. `control` gives the client's new c_i (option II)."""

    def __init__(self, correction: dict[str, torch.Tensor]):
        self.correction = correction
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def start(self, model) -> None:
        params = trainable_by_key(model)
        if set(params) != set(self.correction):
            missing, extra = sorted(set(params) - set(self.correction)), sorted(set(self.correction) - set(params))
            raise KeyError(f"scaffold correction keys differ from the LoRA weights: missing {missing[:2]}, "
                           f"unexpected {extra[:2]}")
        wrong = [k for k, p in params.items() if self.correction[k].shape != p.shape]
        if wrong:
            raise ValueError(f"scaffold correction for {wrong[0]} has shape {tuple(self.correction[wrong[0]].shape)}, "
                             f"the weight {tuple(params[wrong[0]].shape)}")
        self.pairs = [(p, self.correction[k].to(p.device, p.dtype)) for k, p in params.items()]

    def adjust_gradients(self) -> None:
        pass

    @torch.no_grad()
    def after_update(self, lr: float) -> None:
        for p, correction in self.pairs:
            p.add_(correction, alpha=-lr)


def scaffold_control(global_weights: torch.Tensor, trained: torch.Tensor, correction: torch.Tensor,
                     steps: int, lr: float) -> torch.Tensor:
    """The client's new control variate c_i+ = c_i - c + (x - y) / (K lr), elementwise on tensors
    of one shape: x the global weights, y the locally trained ones, K the local steps, correction
    c - c_i (Karimireddy et al., option II)."""
    return (global_weights - trained) / (steps * lr) - correction


def local_algorithm(settings: Settings, correction: dict[str, torch.Tensor] | None):
    """This round's hook for `fl.client-algorithm`, or None (plain local training)."""
    algorithm = settings.fl.client_algorithm
    if algorithm == "fedprox":
        return FedProx(settings.fl.fedprox.mu)
    if algorithm == "scaffold":
        if correction is None:
            raise ValueError("fl.client-algorithm='scaffold': the train message carries no control variates")
        return Scaffold(correction)
    return None
