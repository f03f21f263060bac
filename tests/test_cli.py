"""The `fedsafe` command: the resolved config, and every mistake as one line `fedsafe: error: ...`
with exit code 2 and no traceback (`--debug` shows it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsafe.cli import main, parse_overrides
from fedsafe.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_check_config_prints_the_resolved_config(capsys):
    assert main(["check-config", "--run-config", "defense.aggregator='median' seed=3"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["defense.aggregator"] == "median" and resolved["seed"] == 3
    assert resolved["clients.num"] == 10  # defaults filled in


def test_check_config_reads_a_toml_file_as_flwr_run_does(tmp_path, capsys):
    preset = tmp_path / "preset.toml"
    preset.write_text('seed = 5\nnum-server-rounds = 2\n[defense]\naggregator = "krum"\n')
    assert main(["check-config", "--run-config", str(preset)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["seed"], resolved["num-server-rounds"], resolved["defense.aggregator"]) == (5, 2, "krum")


def test_check_config_names_the_bad_key(capsys):
    assert main(["check-config", "--run-config", "model.quantization=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsafe: error: model.quantization=3") and err.count("\n") == 1


def test_overrides_read_like_flwr(tmp_path):
    toml = tmp_path / "o.toml"
    toml.write_text('seed = 5\n[model]\nname = "org/model"\n')
    assert parse_overrides([str(toml)]) == {"seed": 5, "model.name": "org/model"}
    assert parse_overrides(["output-dir='/a b/c' train.lr-max=0.01", "seed=2"]) == {
        "output-dir": "/a b/c", "train.lr-max": 0.01, "seed": 2}
    with pytest.raises(ConfigError, match="must be the only --run-config"):  # flwr rejects the mix too
        parse_overrides([str(toml), "seed=1"])
    with pytest.raises(ConfigError, match=r"--run-config 'model.name=org/x': expected KEY=VALUE with a TOML value"):
        parse_overrides(["model.name=org/x"])  # text needs quotes


def _fedsafe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedsafe.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def _files(tmp_path: Path) -> dict:
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "bench.csv").write_text("text,label\nhello,1\n")
    (tmp_path / "bad.toml").write_text("seed = \n")
    return {"dir": str(tmp_path)}


MISTAKES = [  # (command line, what the one line must say); the first ones run as a real `fedsafe` process
    (["report", "{dir}/empty-run"], "empty-run: no results.json: not a fedsafe run directory"),
    (["eval", "--adapter", "{dir}/no-adapter"], "no-adapter: not a PEFT adapter folder (no adapter_config.json)"),
    (["eval", "--benchmark", "{dir}/bench.csv"], "bench.csv: no prompt column; expected one of prompt, goal"),
    (["check-config", "--run-config", "seed=-1"], "seed=-1: expected a number >= 0"),
]
IN_PROCESS = [  # the same path in this process (main() is what the entry point calls)
    (["check-config", "--run-config", "no.such-key=1"], "no.such-key: unknown key"),
    (["check-config", "--run-config", "{dir}/bad.toml"], "bad.toml: not valid TOML"),
    (["check-config", "--run-config", "{dir}/none.toml"], "none.toml: cannot read the file (No such file"),
    (["check-config", "--run-config", "eval.safety.benchmark='{dir}/bench.csv'"],
     "eval.safety.benchmark='{dir}/bench.csv': {dir}/bench.csv: no prompt column"),
    (["sweep", "--levels"], "argument --levels: expected one argument"),
]


@pytest.mark.parametrize("argv, says", MISTAKES, ids=[" ".join(a[:2]) for a, _ in MISTAKES])
def test_a_mistake_is_one_line_and_exit_code_2(argv, says, tmp_path):
    names = _files(tmp_path)
    done = _fedsafe(*[a.format(**names) for a in argv])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("fedsafe: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert says.format(**names) in done.stderr and "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("argv, says", IN_PROCESS, ids=[" ".join(a[:2]) for a, _ in IN_PROCESS])
def test_more_mistakes_in_process(argv, says, tmp_path, capsys):
    names = _files(tmp_path)
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsafe: error: ") and err.count("\n") == 1 and says.format(**names) in err, err


def test_debug_shows_the_traceback(tmp_path):
    done = _fedsafe("--debug", "report", str(tmp_path))
    assert done.returncode == 1 and "Traceback" in done.stderr and "not a fedsafe run directory" in done.stderr
