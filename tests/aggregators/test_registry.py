"""Registry: names, dotted paths, parameter checks, call_aggregator, validate_updates."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsafe.aggregators import (AggregationResult, available, call_aggregator, get_aggregator, register,
                              registry, validate_updates)

ROOT = Path(__file__).resolve().parents[2]
BUILT_INS = ["bulyan", "dnc", "fedavg", "flame", "foolsgold", "krum", "median", "multi-krum",
             "norm-bound", "oracle", "residual", "safety-probe", "trimmed-mean"]


@pytest.fixture
def user_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # `tests.aggregators.user_agg` from any working directory


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry.REGISTRY, "entries", dict(registry.REGISTRY.entries))


def test_all_built_ins_registered_and_buildable_with_defaults():
    assert available() == BUILT_INS
    for name in available():
        assert callable(get_aggregator(name))


def test_register_adds_a_name(scratch_registry):
    @register("my-rule")
    class MyRule:
        def __init__(self, alpha: float = 1.0):
            self.alpha = alpha

    built = get_aggregator("my-rule", alpha=2.0)
    assert isinstance(built, MyRule) and built.alpha == 2.0 and MyRule.name == "my-rule"
    assert "my-rule" in available()


def test_duplicate_registration_fails_loudly(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register("krum")


@pytest.mark.parametrize("bad", ["Krum", "multi_krum", "1krum", "krum-", "-krum", "a--b", "", "a b", "pkg.mod:attr"])
def test_bad_names_fail_loudly(scratch_registry, bad):
    with pytest.raises(ValueError, match="kebab-case"):
        register(bad)


def test_unknown_name_lists_what_is_available():
    with pytest.raises(ValueError) as err:
        get_aggregator("kurm")
    message = str(err.value)
    assert "'kurm'" in message and "package.module:attr" in message
    assert all(name in message for name in BUILT_INS)


def test_unknown_parameter_names_aggregator_param_and_accepted():
    with pytest.raises(ValueError) as err:
        get_aggregator("multi-krum", num_malicous=2)
    message = str(err.value)
    assert "'multi-krum'" in message and "num_malicous" in message
    assert "num_malicious" in message and "num_selected" in message
    with pytest.raises(ValueError, match=r"accepted: \(none\)"):
        get_aggregator("fedavg", beta=0.1)


def test_parameter_values_are_checked():
    with pytest.raises(ValueError, match="beta"):
        get_aggregator("trimmed-mean", beta=0.5)
    with pytest.raises(ValueError, match="num_malicious"):
        get_aggregator("krum", num_malicious=-1)


def test_dotted_path_function_is_used_as_is(user_path):
    agg = get_aggregator("tests.aggregators.user_agg:clipped_mean")
    updates = torch.tensor([[3.0, 4.0], [0.0, 0.5]])
    result = call_aggregator(agg, updates, torch.ones(2))
    assert torch.allclose(result.update, torch.tensor([0.3, 0.65]))
    assert result.flagged.tolist() == [True, False]


def test_dotted_path_class_gets_params_and_they_are_checked(user_path):
    agg = get_aggregator("tests.aggregators.user_agg:ClippedMean", max_norm=10.0)
    assert agg.max_norm == 10.0
    with pytest.raises(ValueError, match="unknown parameter.*'norm'.*accepted: max_norm"):
        get_aggregator("tests.aggregators.user_agg:ClippedMean", norm=1.0)


@pytest.mark.parametrize("path, reason", [("tests.aggregators.no_such_module:x", "cannot import"),
                                          ("tests.aggregators.user_agg:nothing", "no attribute")])
def test_dotted_path_errors(user_path, path, reason):
    with pytest.raises(ValueError, match=reason):
        get_aggregator(path)


def test_call_aggregator_passes_only_declared_needs(user_path):
    from tests.aggregators.user_agg import NeedsEverything

    agg = NeedsEverything()
    updates, weights = torch.randn(3, 4), torch.ones(3)
    call_aggregator(agg, updates, weights, client_ids=[7, 8, 9], probe="probe")
    assert agg.seen == {"client_ids": [7, 8, 9], "probe": "probe"}
    with pytest.raises(ValueError, match="needs client_ids"):
        call_aggregator(agg, updates, weights, probe="probe")
    with pytest.raises(ValueError, match="needs a behaviour probe"):
        call_aggregator(agg, updates, weights, client_ids=[7, 8, 9])
    # Rules that declare nothing get nothing, even when the strategy has ids and a probe.
    result = call_aggregator(get_aggregator("fedavg"), updates, weights, client_ids=[1, 2, 3], probe="p")
    assert isinstance(result, AggregationResult)


def test_call_aggregator_rejects_a_broken_result(user_path):
    with pytest.raises(TypeError, match="expected AggregationResult"):
        call_aggregator(get_aggregator("tests.aggregators.user_agg:returns_tensor"), torch.randn(3, 2), torch.ones(3))


@pytest.mark.parametrize("updates, weights, reason", [
    (torch.zeros(4), torch.ones(4), "2-D"),
    (torch.zeros(3, 2, 2), torch.ones(3), "2-D"),
    (torch.zeros(3, 2, dtype=torch.int64), torch.ones(3), "floating point"),
    (torch.zeros(3, 2), torch.ones(2), r"shape \(3,\)"),
    (torch.zeros(3, 2), torch.tensor([1.0, 0.0, 1.0]), "> 0"),
    (torch.zeros(3, 2), torch.tensor([1.0, float("nan"), 1.0]), "> 0"),
    (torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [0.0, float("inf")]]), torch.ones(3), r"rows \[1, 2\]"),
])
def test_validate_updates_rejects(updates, weights, reason):
    with pytest.raises(ValueError, match=reason):
        validate_updates(updates, weights)


def test_validate_updates_accepts_good_input():
    validate_updates(torch.randn(5, 7), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_import_is_light():
    code = ("import sys, fedsafe.aggregators, fedsafe.defenses; "
            "print(sorted(m for m in ('transformers', 'peft', 'sklearn', 'flwr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
