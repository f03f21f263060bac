"""Optimizer registry: names, dotted paths, parameter checks, the shipped config keys."""

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.common.config import flatten_dict

from fedsafe.config import KEYS, ConfigError, from_run_config
from fedsafe.optimizers import apply_optimizer, available, get_optimizer, register, registry

ROOT = Path(__file__).resolve().parents[2]
BUILT_INS = ["fedadagrad", "fedadam", "fedavgm", "fedyogi", "sgd"]


@pytest.fixture
def user_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry.REGISTRY, "entries", dict(registry.REGISTRY.entries))


def test_built_ins_registered():
    assert available() == BUILT_INS


def test_register_adds_a_name_and_duplicates_or_bad_names_fail(scratch_registry):
    @register("lookahead")
    class Lookahead:
        def __call__(self, global_vector, update):
            return global_vector + update

    assert isinstance(get_optimizer("lookahead"), Lookahead) and Lookahead.name == "lookahead"
    with pytest.raises(ValueError, match="optimizer 'fedadam' is already registered"):
        register("fedadam")
    for bad in ("FedAdam", "fed_adam", "pkg.mod:attr", ""):
        with pytest.raises(ValueError, match="optimizer name .* kebab-case"):
            register(bad)


def test_unknown_name_and_parameter_messages():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; available: fedadagrad, fedadam, fedavgm"):
        get_optimizer("adamw")
    with pytest.raises(ValueError, match=r"optimizer 'fedadagrad' got unknown parameter\(s\) 'beta_1'; "
                                         r"accepted: eta, tau"):
        get_optimizer("fedadagrad", beta_1=0.9)


@pytest.mark.parametrize("name, params, word", [
    ("sgd", {"lr": 0.0}, "lr"), ("fedavgm", {"server_momentum": 1.0}, "server_momentum"),
    ("fedadam", {"beta_2": -0.1}, "beta_2"), ("fedyogi", {"tau": 0.0}, "tau"), ("fedadagrad", {"eta": -1.0}, "eta")])
def test_parameter_values_are_checked(name, params, word):
    with pytest.raises(ValueError, match=word):
        get_optimizer(name, **params)


def test_dotted_paths(user_path):
    half = get_optimizer("tests.optimizers.user_opt:halfway")
    assert torch.equal(apply_optimizer(half, torch.ones(3), torch.ones(3)), torch.full((3,), 1.5))
    sign = get_optimizer("tests.optimizers.user_opt:SignStep", lr=0.5)
    assert torch.equal(apply_optimizer(sign, torch.zeros(2), torch.tensor([-3.0, 2.0])), torch.tensor([-0.5, 0.5]))
    with pytest.raises(ValueError, match="cannot import"):
        get_optimizer("tests.optimizers.no_such:x")
    with pytest.raises(TypeError, match="returned shape \\(\\); expected a tensor of shape \\(3,\\)"):
        apply_optimizer(get_optimizer("tests.optimizers.user_opt:wrong_shape"), torch.ones(3), torch.ones(3))


def test_config_builds_the_chosen_optimizer_and_rejects_bad_ones(user_path):
    s = from_run_config({"fl.optimizer": "fedyogi", "fl.fedyogi.eta": 0.05, "fl.fedadam.eta": 9.0})
    assert s.fl.optimizer == "fedyogi" and s.fl.optimizer_params == {"eta": 0.05}  # only its own keys
    assert from_run_config({"fl.optimizer": "tests.optimizers.user_opt:SignStep"}).fl.optimizer_params == {}
    with pytest.raises(ConfigError, match=r"^fl.optimizer='fedadam': fedadam beta_1 must be in \[0, 1\), got 1.0$"):
        from_run_config({"fl.optimizer": "fedadam", "fl.fedadam.beta-1": 1.0})
    with pytest.raises(ConfigError, match="fl.optimizer='fedadam': .*unknown parameter.*'eta_l'"):
        from_run_config({"fl.optimizer": "fedadam", "fl.fedadam.eta-l": 0.1})
    with pytest.raises(ConfigError, match="fl.optimizer='adam'"):
        from_run_config({"fl.optimizer": "adam"})
    with pytest.raises(ConfigError, match="^fl.client-algorithm='scaffold': expected 'none' or 'fedprox' with "
                                          "defense.dp.noise-multiplier > 0"):
        from_run_config({"fl.client-algorithm": "scaffold", "defense.dp.noise-multiplier": 0.5})
    with pytest.raises(ConfigError, match="fl.client-algorithm='fedavg': expected one of 'none', 'fedprox', "):
        from_run_config({"fl.client-algorithm": "fedavg"})


def test_shipped_optimizer_params_are_each_constructors_defaults():
    """pyproject.toml lists every built-in's parameters with its default (Flower's), so a run
    config shows them and --run-config can override them."""
    shipped = flatten_dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])
    listed = {}
    for key, value in shipped.items():
        if key.startswith("fl.") and key not in KEYS:
            _, name, param = key.split(".")
            listed.setdefault(name, {})[param.replace("-", "_")] = value
    assert sorted(listed) == BUILT_INS
    for name in BUILT_INS:
        defaults = {p.name: p.default for p in inspect.signature(registry.REGISTRY.entries[name]).parameters.values()}
        assert listed[name] == defaults, name
        assert from_run_config({**shipped, "fl.optimizer": name}).fl.optimizer_params == defaults


def test_import_is_light():
    code = ("import sys, fedsafe.optimizers; "
            "print(sorted(m for m in ('transformers', 'peft', 'flwr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
