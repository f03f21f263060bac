"""`fedsafe check-config`: the resolved config, or one line naming the bad key (exit 2)."""

import json

from fedsafe.cli import main, parse_overrides


def test_check_config_prints_the_resolved_config(capsys):
    assert main(["check-config", "--run-config", "defense.aggregator='median' seed=3"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["defense.aggregator"] == "median" and resolved["seed"] == 3
    assert resolved["clients.num"] == 10  # defaults filled in


def test_check_config_names_the_bad_key(capsys):
    assert main(["check-config", "--run-config", "model.quantization=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedsafe: config error: model.quantization=3") and "\n" not in err


def test_overrides_read_like_flwr(tmp_path):
    toml = tmp_path / "o.toml"
    toml.write_text('seed = 5\n[model]\nname = "org/model"\n')
    assert parse_overrides([str(toml), "output-dir='/a b/c' train.lr-max=0.01"]) == {
        "seed": 5, "model.name": "org/model", "output-dir": "/a b/c", "train.lr-max": 0.01}
