"""Flower's own strategies as the reference for the server optimizers of the same names.

Each round, Flower's FedAvgM / FedAdagrad / FedYogi / FedAdam runs its real configure_train (on
the in-process grid) and aggregate_train on reply Messages carrying full client arrays (the
global plus each client's delta); ours gets fedavg of the same deltas and steps from its own
global. After every one of several rounds both globals agree. Flower keeps FedAdam's state in
float64 (NumPy promotes its bias-corrected rate), ours in float32: hence the tolerance.
"""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvgM, FedYogi

from fedsafe.aggregators import call_aggregator, get_aggregator
from fedsafe.optimizers import apply_optimizer, get_optimizer
from tests.aggregators.test_flower_reference import SHAPES, D, replies
from tests.inprocess import InProcessGrid

ROUNDS, N = 6, 5

CASES = [  # (our name, our params, Flower's strategy, its params)
    ("fedavgm", {}, FedAvgM, {}),
    ("fedavgm", {"server_learning_rate": 0.7, "server_momentum": 0.9}, FedAvgM,
     {"server_learning_rate": 0.7, "server_momentum": 0.9}),
    ("fedadagrad", {}, FedAdagrad, {}),
    ("fedadagrad", {"eta": 0.03, "tau": 1e-2}, FedAdagrad, {"eta": 0.03, "tau": 1e-2}),
    ("fedyogi", {}, FedYogi, {}),
    ("fedyogi", {"eta": 0.05, "beta_1": 0.5, "beta_2": 0.9, "tau": 1e-4}, FedYogi,
     {"eta": 0.05, "beta_1": 0.5, "beta_2": 0.9, "tau": 1e-4}),
    ("fedadam", {}, FedAdam, {}),
    ("fedadam", {"eta": 0.02, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-2}, FedAdam,
     {"eta": 0.02, "beta_1": 0.8, "beta_2": 0.95, "tau": 1e-2}),
]


def as_record(vector: np.ndarray) -> ArrayRecord:
    out, start = {}, 0
    for key, shape in SHAPES.items():
        size = int(np.prod(shape))
        out[key] = Array(vector[start:start + size].reshape(shape).copy())
        start += size
    return ArrayRecord(out)


def as_vector(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().ravel() for k in SHAPES])


@pytest.mark.parametrize("name, params, strategy_class, flower_params", CASES)
def test_several_rounds_match_flower(name, params, strategy_class, flower_params):
    strategy = strategy_class(min_available_nodes=N, min_train_nodes=N, **flower_params)
    grid = InProcessGrid(None, {}, N)
    opt = get_optimizer(name, **params)
    g = torch.Generator().manual_seed(len(name) + len(params))
    start = torch.randn(D, generator=g) * 0.1
    flower_global, ours = start.numpy().astype(np.float64), start.clone()
    for server_round in range(1, ROUNDS + 1):
        deltas = torch.randn(N, D, generator=g) * 0.05 + 0.02 * server_round  # a drifting direction
        weights = torch.randint(1, 50, (N,), generator=g).float()
        strategy.configure_train(server_round, as_record(flower_global.astype(np.float32)), ConfigRecord(), grid)
        clients = torch.from_numpy(flower_global.astype(np.float32)) + deltas  # (N, D) full arrays
        arrays, _ = strategy.aggregate_train(server_round, replies(clients, weights))
        flower_global = as_vector(arrays).astype(np.float64)
        update = call_aggregator(get_aggregator("fedavg"), deltas, weights).update
        ours = apply_optimizer(opt, ours, update)
        assert ours.dtype == torch.float32
        np.testing.assert_allclose(ours.numpy(), flower_global, rtol=1e-5, atol=2e-6,
                                   err_msg=f"{name} round {server_round}")
    assert not np.allclose(flower_global, start.numpy())  # the optimizer moved the global
