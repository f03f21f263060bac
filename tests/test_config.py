"""Config: defaults agree with pyproject.toml, and every bad value fails in one line naming the key."""

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from fedsafe.config import KEYS, ConfigError, defaults, from_run_config
from fedsafe.aggregators import available

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_config() -> dict:
    """Flower's flattening of [tool.flwr.app.config] (dotted keys)."""
    return flatten_dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])


def test_pyproject_defaults_equal_config_defaults():
    shipped = _pyproject_config()
    core = {k: v for k, v in shipped.items() if k in KEYS}
    assert core == defaults()
    assert set(KEYS) <= set(shipped)


def test_every_shipped_defense_param_resolves():
    """Aggregator params in pyproject.toml name registered aggregators and real parameters."""
    shipped = _pyproject_config()
    params = [k for k in shipped if k.startswith("defense.") and k not in KEYS]
    for key in params:
        name = key.split(".")[1]
        assert name in available(), key
        # every client in the round: bulyan (f = 1) needs 7, more than the default 4
        from_run_config({**shipped, "defense.aggregator": name, "clients.per-round": shipped["clients.num"]})


def test_defaults_parse():
    s = from_run_config({})
    assert s.model.name == "smollm2-135m-instruct"
    assert s.attack.malicious_ids == (7, 8, 9)  # the last 3 of 10, as in the paper
    assert s.clients.per_round == 4
    assert s.model.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_explicit_malicious_ids_override_count():
    assert from_run_config({"attack.malicious-ids": "1, 4"}).attack.malicious_ids == (1, 4)


def test_cosine_lr_decays_from_max_to_min():
    t = from_run_config({"train.lr-max": 1e-3, "train.lr-min": 1e-4, "num-server-rounds": 4}).train
    lrs = [t.lr(r, 4) for r in range(1, 5)]
    assert lrs[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] > 1e-4


def test_aggregator_params_reach_the_constructor():
    s = from_run_config({"defense.aggregator": "trimmed-mean", "defense.trimmed-mean.beta": 0.25})
    assert s.defense.params == {"beta": 0.25}


BAD = [
    ({"model.quantization": 3}, "model.quantization"),
    ({"model.name": "no-such-model"}, "model.name"),
    ({"model.name": "/definitely/not/here/model"}, "model.name"),
    ({"clients.per-round": 11}, "clients.per-round"),
    ({"clients.reserve": 7}, r"clients.reserve=7: expected at most clients.num - clients.per-round = 6"),
    ({"clients.reserve": -1}, "clients.reserve"),
    ({"clients.num": 0}, "clients.num"),
    ({"attack.num-malicious": 11}, "attack.num-malicious"),
    ({"attack.malicious-ids": "3,x"}, "attack.malicious-ids"),
    ({"attack.malicious-ids": "12"}, "attack.malicious-ids"),
    ({"attack.benign-mix": 1.5}, "attack.benign-mix"),
    ({"attack.update": "boost"}, "attack.update"),
    ({"attack.data": "/missing/attack.jsonl"}, "attack.data"),
    ({"data.benign": "/missing/benign.csv"}, "data.benign"),
    ({"data.benign": "not a source"}, "data.benign"),
    ({"train.local-steps": -1}, "train.local-steps"),
    ({"train.lr-max": 0.0}, "train.lr-max"),
    ({"train.lr-min": 0.1}, "train.lr-min"),
    ({"train.batch-size": "four"}, "train.batch-size"),
    ({"num-server-rounds": 0}, "num-server-rounds"),
    ({"posthoc.level": "L4"}, "posthoc.level"),
    ({"posthoc.steps": 0}, "posthoc.steps"),
    ({"posthoc.select-every": -1}, "posthoc.select-every"),
    ({"posthoc.select-size": 31}, "posthoc.select-size"),
    ({"eval.safety.benchmark": "gsm8k"}, "eval.safety.benchmark"),
    ({"eval.safety.benchmark": "/missing/prompts.csv"}, "eval.safety.benchmark"),
    ({"eval.temperature": -0.1}, "eval.temperature"),
    ({"eval.top-p": 0.0}, "eval.top-p"),
    ({"eval.top-p": 1.5}, "eval.top-p"),
    ({"eval.max-new-tokens": 0}, "eval.max-new-tokens"),
    ({"eval.max-new-tokens": 4097}, "eval.max-new-tokens=4097: expected an integer in [1, 4096]"),
    ({"eval.judge": ""}, "eval.judge"),
    ({"eval.judge": "not a judge"}, "eval.judge"),
    ({"eval.judge": "/tmp"}, "eval.judge"),  # a folder without config.json
    ({"eval.judges": "paper-rule, not a judge"}, "eval.judges"),
    ({"eval.rm-model": "not a model"}, "eval.rm-model"),
    ({"eval.mt1.questions": "/missing/question.jsonl"}, "eval.mt1.questions"),
    ({"defense.aggregator": "nope"}, "defense.aggregator"),
    ({"defense.aggregator": "krum", "defense.krum.bogus": 1}, "defense.aggregator"),
    ({"defense.aggregator": "no_such_module:agg"}, "defense.aggregator"),
    ({"model.lora.dropout": 2.0}, "model.lora.dropout"),
    ({"output-dir": "relative/path"}, "output-dir"),
    ({"unknown.key": 1}, "unknown.key"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        from_run_config(override)
    message = str(err.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_eval_protocol_keys():
    s = from_run_config({"eval.temperature": 0.7, "eval.top-p": 1.0, "eval.max-new-tokens": 1024,
                         "eval.judge": "Paper-Rule", "eval.judges": "rule, paper-rule,OpenSafetyLab/MD-Judge-v0.1"})
    assert (s.eval.temperature, s.eval.top_p, s.eval.max_new_tokens) == (0.7, 1.0, 1024)
    assert s.eval.judge == "paper-rule"
    assert s.eval.judges == ("paper-rule", "rule", "OpenSafetyLab/MD-Judge-v0.1")
    defaults = from_run_config({}).eval
    assert (defaults.temperature, defaults.judges, defaults.rm_model, defaults.mt1.questions) == (0.0, ("rule",), "", "")


def test_aggregator_needing_more_clients_than_a_round_has_is_refused_up_front():
    with pytest.raises(ConfigError, match=r"clients.per-round=4: expected at least 7 .*bulyan"):
        from_run_config({"defense.aggregator": "bulyan"})
    assert from_run_config({"defense.aggregator": "bulyan", "clients.per-round": 7}).clients.per_round == 7


DEGENERATE = [  # (override, the one-line error), clients.per-round = 4 unless given
    ({"defense.aggregator": "trimmed-mean", "defense.trimmed-mean.beta": 0.1},
     "defense.trimmed-mean.beta=0.1: trims 0 of 4 updates per side; the smallest that trims one is 0.25 "
     "(or beta=0 and trim=1)"),
    ({"defense.aggregator": "trimmed-mean", "defense.trimmed-mean.trim": 0},
     "defense.trimmed-mean.trim=0: trims 0 of 4 updates per side; the smallest that trims one is 1"),
    ({"defense.aggregator": "trimmed-mean", "defense.trimmed-mean.beta": 0.3, "clients.per-round": 2},
     "clients.per-round=2: no beta < 0.5 trims any of 2 updates; trimming one per side needs 3 "
     "(defense.aggregator='trimmed-mean')"),
    ({"defense.aggregator": "krum", "defense.krum.num-malicious": 2},
     "defense.krum.num-malicious=2: n - f - 2 = 0 leaves no neighbour to score each of 4 updates by; "
     "the largest that leaves one is 1"),
    ({"defense.aggregator": "multi-krum", "defense.multi-krum.num-malicious": 3},
     "defense.multi-krum.num-malicious=3: n - f - 2 = -1 leaves no neighbour to score each of 4 updates by; "
     "the largest that leaves one is 1"),
    ({"defense.aggregator": "multi-krum", "defense.multi-krum.num-malicious": 0},
     "defense.multi-krum.num-malicious=0: selects n - f = all 4 updates (num-selected=0): the plain average; "
     "the smallest that leaves one out is 1"),
    ({"defense.aggregator": "multi-krum", "defense.multi-krum.num-selected": 4},
     "defense.multi-krum.num-selected=4: selects all 4 updates: the plain average; the largest that leaves "
     "one out is 3"),
    ({"defense.aggregator": "krum", "defense.krum.variant": "neighbourhood", "defense.krum.num-malicious": 0},
     "defense.krum.num-malicious=0: averages the best update and its n - f - 1 nearest: all 4 updates, the "
     "plain average; the smallest that leaves one out is 1"),
    ({"defense.aggregator": "krum", "defense.krum.variant": "neighbourhood", "defense.krum.num-malicious": 3},
     "defense.krum.num-malicious=3: n - f - 1 = 0 leaves the best of 4 updates no neighbour; the largest that "
     "leaves one is 2"),
    ({"defense.aggregator": "bulyan", "defense.bulyan.num-malicious": 0},
     "defense.bulyan.num-malicious=0: selects and averages all 4 updates (theta = beta = n): the plain average; "
     "the smallest that trims is 1 (it needs 7 updates a round)"),
    ({"defense.aggregator": "dnc", "defense.dnc.num-malicious": 0},
     "defense.dnc.num-malicious=0: removes int(c * num-malicious) = 0 of 4 updates: the plain average; "
     "the smallest that removes one is 1"),
    ({"defense.aggregator": "dnc", "defense.dnc.c": 0.4, "defense.dnc.num-malicious": 2},
     "defense.dnc.c=0.4: removes int(c * num-malicious) = 0 of 4 updates: the plain average; "
     "the smallest that removes one is 0.5"),
    ({"defense.aggregator": "dnc", "defense.dnc.num-malicious": 5},
     "defense.dnc.num-malicious=5: removes int(c * num-malicious) = 5 of 4 updates, all of them; "
     "the largest that keeps one is 3"),
    ({"defense.aggregator": "median", "clients.per-round": 2},
     "clients.per-round=2: the median of 2 updates is their mean; it needs 3 (defense.aggregator='median')"),
    ({"defense.aggregator": "flame", "clients.per-round": 2},
     "clients.per-round=2: FLAME clusters at least 3 updates; with 2 it keeps them all (a clipped average) "
     "(defense.aggregator='flame')"),
]


@pytest.mark.parametrize("override,message", DEGENERATE, ids=[m.split(":")[0] for _, m in DEGENERATE])
def test_a_rule_that_would_do_nothing_is_refused_up_front(override, message):
    with pytest.raises(ConfigError) as err:
        from_run_config(override)
    assert str(err.value) == message


def test_no_built_in_default_is_degenerate():
    """Every rule's defaults do something with the default round (bulyan needs 7 clients)."""
    for name in available():
        per_round = 7 if name == "bulyan" else KEYS["clients.per-round"].default
        from_run_config({"defense.aggregator": name, "clients.per-round": per_round})


def test_rules_taking_reserves_are_checked_on_the_rows_they_score():
    """Krum with f = 2 scores 4 sampled + 1 reserve = 5 rows: one neighbour each. A rule taking no
    reserves only ever sees clients.per-round rows."""
    krum = {"defense.aggregator": "krum", "defense.krum.num-malicious": 2, "clients.per-round": 4}
    assert from_run_config({**krum, "clients.reserve": 1}).clients.reserve == 1
    with pytest.raises(ConfigError, match="defense.krum.num-malicious=2"):
        from_run_config(krum)
    with pytest.raises(ConfigError, match="defense.trimmed-mean.beta=0.1: trims 0 of 4 updates"):
        from_run_config({"defense.aggregator": "trimmed-mean", "defense.trimmed-mean.beta": 0.1,
                         "clients.reserve": 6})


def test_probe_prompt_limit_matches_the_bundled_files():
    from fedsafe import data
    from fedsafe.config import PROBE_PROMPTS

    assert len(data.bundled("harmful_probe")) == len(data.bundled("helpful_probe")) == PROBE_PROMPTS


def test_pyproject_block_and_configuration_doc_are_generated_from_the_declarations():
    """Stale derived files fail here; `python -m fedsafe.config.generate` rewrites both."""
    from fedsafe.config.generate import configuration_md, current_block, pyproject_block

    assert current_block() == pyproject_block()
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == configuration_md()


def test_every_key_is_declared_once_with_help_and_a_flower_type():
    from fedsafe.config import declared_keys

    keys = declared_keys()
    assert len({spec.path for spec in keys.values()}) == len(keys)
    for key, spec in keys.items():
        assert spec.help.strip(), key
        assert spec.kind in (bool, int, float, str), key
