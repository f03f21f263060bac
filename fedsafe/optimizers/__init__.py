"""Server optimizers: how the global adapter moves with the update the aggregator chose.

    from fedsafe.optimizers import get_optimizer, apply_optimizer
    opt = get_optimizer("fedadam", eta=0.01)            # or "package.module:attr"
    new_global = apply_optimizer(opt, global_vector, update)   # all (d,)

Every optimizer composes with every aggregator: the rule decides what the round's update is,
the optimizer how far and in which way the global adapter follows it. Importing this package
registers the built-ins (sgd, fedavgm, fedadagrad, fedyogi, fedadam) and imports no model
library and no flwr: optimizers are pure tensor code.
"""

from fedsafe.optimizers.base import ServerOptimizer, apply_optimizer
from fedsafe.optimizers.registry import available, get_optimizer, register

# Built-in optimizers register themselves on import.
from fedsafe.optimizers import fedopt, sgd  # noqa: E402,F401

__all__ = ["ServerOptimizer", "apply_optimizer", "available", "get_optimizer", "register"]
