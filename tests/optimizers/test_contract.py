"""The server-optimizer contract on every registered optimizer, and every registered aggregator
composed with every optimizer through the real strategy."""

import pytest
import torch

from fedsafe import models
from fedsafe.aggregators import available as aggregators, call_aggregator, get_aggregator
from fedsafe.config import from_run_config
from fedsafe.federation.strategy import RobustStrategy
from fedsafe.optimizers import apply_optimizer, available, get_optimizer
from fedsafe.results import Recorder
from tests.aggregators.test_contract import norm_probe
from tests.federation.test_replies import reply
from tests.inprocess import InProcessGrid, scripted_app

D = 48


def vectors(seed, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g).squeeze(0)


@pytest.mark.parametrize("name", available())
def test_steps_keep_shape_and_inputs_and_follow_the_update(name):
    opt = get_optimizer(name)
    global_vector, update = vectors(1), vectors(2)
    before = (global_vector.clone(), update.clone())
    new = apply_optimizer(opt, global_vector, update)
    assert new.shape == (D,) and new.dtype == torch.float32 and torch.isfinite(new).all()
    assert torch.equal(global_vector, before[0]) and torch.equal(update, before[1]), "inputs must not change"
    # the first step moves every coordinate the way the update points
    assert torch.equal(torch.sign(new - global_vector), torch.sign(update))
    for seed in range(3, 6):
        new = apply_optimizer(opt, new, vectors(seed))
        assert torch.isfinite(new).all()


@pytest.mark.parametrize("name", available())
def test_a_zero_first_update_leaves_the_global(name):
    global_vector = vectors(7)
    assert torch.equal(apply_optimizer(get_optimizer(name), global_vector, torch.zeros(D)), global_vector)


@pytest.mark.parametrize("name", available())
def test_state_survives_a_checkpoint(name):
    params = {"server_momentum": 0.9} if name == "fedavgm" else {}
    original, restored = get_optimizer(name, **params), get_optimizer(name, **params)
    x = vectors(8)
    for seed in (9, 10):
        x = apply_optimizer(original, x, vectors(seed))
    if hasattr(original, "state_dict"):
        restored.load_state_dict(original.state_dict())
    a = apply_optimizer(original, x, vectors(11))
    b = apply_optimizer(restored, x, vectors(11))
    assert torch.equal(a, b)


def test_sgd_with_lr_one_is_fedavgs_step_bit_for_bit():
    global_vector, update = vectors(12), vectors(13) * 1e-3
    assert torch.equal(apply_optimizer(get_optimizer("sgd"), global_vector, update), global_vector + update)


# ---- every aggregator x every optimizer, through RobustStrategy (two rounds) -----------------

GLOBAL = {"a.lora_A.weight": torch.zeros(4, 6), "a.lora_B.weight": torch.zeros(6, 4)}  # d = 48
N, ROUNDS = 8, 2


def fixed_points(clients):
    """Node k answers every round with the arrays clients[k] (a fixed point, so the deltas change
    as the global moves) and num-examples 10 + k."""

    def answer(msg, pid):
        arrays = {k: v.numpy() for k, v in models.unflatten(clients[pid], GLOBAL).items()}
        return reply(msg, arrays, {"num-examples": 10 + pid, "partition-id": pid})

    return InProcessGrid(scripted_app(answer), {}, len(clients))


@pytest.mark.parametrize("optimizer", available())
@pytest.mark.parametrize("aggregator", aggregators())
def test_every_aggregator_composes_with_every_optimizer(tmp_path, aggregator, optimizer):
    settings = from_run_config({"clients.num": N, "clients.per-round": N, "attack.malicious-ids": "6,7",
                                "num-server-rounds": ROUNDS, "defense.aggregator": aggregator,
                                "fl.optimizer": optimizer})
    clients = vectors(20, N) * 0.1 + torch.linspace(-1, 1, D)  # (N, D): a shared direction + spread

    def probe(state, updates):  # a stand-in, as in the rule contract
        return norm_probe(updates)

    strategy = RobustStrategy(settings, get_aggregator(aggregator), Recorder(tmp_path, settings),
                              optimizer=get_optimizer(optimizer), probe=probe, wait_seconds=5)
    result = strategy.start(grid=fixed_points(clients), initial_arrays=models.to_arrays(GLOBAL), num_rounds=ROUNDS)

    # the same rule and optimizer, called by hand on the same deltas
    agg, opt, x = get_aggregator(aggregator), get_optimizer(optimizer), models.flatten(GLOBAL)
    ids, malicious = list(range(N)), [i >= 6 for i in range(N)]
    for _ in range(ROUNDS):
        step = call_aggregator(agg, clients - x, torch.tensor([10.0 + i for i in ids]), client_ids=ids,
                               probe=norm_probe, malicious=malicious, keep_at_most=N).update
        x = apply_optimizer(opt, x, step)
    assert torch.equal(models.flatten(models.from_arrays(result.arrays)), x)
    assert not torch.equal(x, models.flatten(GLOBAL))


def test_a_users_optimizer_runs_in_the_strategy_and_its_state_is_checkpointed(tmp_path, monkeypatch):
    from fedsafe.federation.checkpoint import load_state, save_state
    from tests.optimizers.test_registry import ROOT

    monkeypatch.syspath_prepend(str(ROOT))
    settings = from_run_config({"clients.num": 3, "clients.per-round": 3, "attack.num-malicious": 0,
                                "fl.optimizer": "tests.optimizers.user_opt:SignStep"})
    opt = get_optimizer(settings.fl.optimizer, **settings.fl.optimizer_params)
    clients = vectors(30, 3)  # (3, D)
    strategy = RobustStrategy(settings, get_aggregator("fedavg"), Recorder(tmp_path, settings), optimizer=opt,
                              wait_seconds=5)
    result = strategy.start(grid=fixed_points(clients), initial_arrays=models.to_arrays(GLOBAL), num_rounds=2)
    x = models.flatten(GLOBAL)
    for _ in range(2):  # lr 0.01 (the class default) times the sign of the examples-weighted mean delta
        mean = ((clients - x) * torch.tensor([10.0, 11.0, 12.0])[:, None]).sum(0) / 33.0
        x = x + 0.01 * mean.sign()
    assert torch.allclose(models.flatten(models.from_arrays(result.arrays)), x)
    save_state(tmp_path, 2, GLOBAL, {"optimizer": opt})
    restored = get_optimizer(settings.fl.optimizer)
    assert load_state(tmp_path, {"optimizer": restored})[0] == 2 and restored.steps == opt.steps == 2
