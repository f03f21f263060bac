"""Presets (presets/*.toml, passed as `flwr run . --run-config FILE`): each parses through Flower's
own TOML reading and passes fedsafe's checks; the offline default spells out the defaults; the
paper presets hold the settings of arXiv 2406.10630 (Ye et al. 2024) that the README maps."""

from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedsafe.cli import main
from fedsafe.config import defaults, from_run_config

PRESETS = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.toml"))
PAPER = {
    "num-server-rounds": 100, "clients.num": 10, "attack.num-malicious": 3, "clients.per-round": 3,
    "clients.sampling": "uniform", "train.local-steps": 10, "train.batch-size": 16, "train.lr-max": 5e-5,
    "train.lr-min": 1e-6, "train.seq-length": 512, "model.lora.r": 32, "model.lora.alpha": 64,
    "model.lora.target-modules": "q_proj,v_proj", "model.quantization": 8, "model.template": "alpaca",
    "data.samples-per-client": 500, "attack.samples-per-client": 500, "eval.temperature": 0.7,
    "eval.max-new-tokens": 1024, "eval.judge": "paper-rule",
}


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"offline-default", "paper-llama2-7b", "paper-mistral-7b"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_passes_check_config(preset, capsys):
    assert main(["check-config", "--run-config", str(preset)]) == 0, capsys.readouterr().err
    from_run_config(parse_config_args([str(preset)]))  # as flwr run reads it


def test_offline_default_preset_is_the_default_experiment():
    preset = parse_config_args([str(next(p for p in PRESETS if p.stem == "offline-default"))])
    assert {k: defaults()[k] for k in preset} == preset


@pytest.mark.parametrize("name", ["paper-llama2-7b", "paper-mistral-7b"])
def test_paper_presets_hold_the_papers_settings(name):
    preset = parse_config_args([str(next(p for p in PRESETS if p.stem == name))])
    assert {k: preset[k] for k in PAPER} == PAPER
