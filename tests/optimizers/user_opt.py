"""Server optimizers defined outside fedsafe, reached by dotted path in the tests."""

import torch


def halfway(global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """An already-built optimizer: half of every update."""
    return global_vector + 0.5 * update


class SignStep:
    """A class with one hyperparameter and state: signSGD, counting its steps."""

    def __init__(self, lr: float = 0.01):
        self.lr = lr
        self.steps = 0

    def __call__(self, global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return global_vector + self.lr * update.sign()

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])


def wrong_shape(global_vector: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """Breaks the contract: returns one value."""
    return update.sum()
