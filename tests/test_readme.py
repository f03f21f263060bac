"""Every command the README shows still works: `fedsafe` subcommands answer --help, each
`flwr run` example's run config passes fedsafe's checks as Flower parses it, and the scripts and
files it names exist."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args

from fedsafe.cli import main
from fedsafe.config import from_run_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> list[str]:
    """Lines of the README's ```bash blocks, comments and line continuations resolved."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", README, re.M | re.S):
        text = block.replace("\\\n", " ")
        lines += [line.split("  #")[0].strip() for line in text.splitlines() if line.strip()]
    return lines


def test_the_readme_shows_each_kind_of_command():
    kinds = {line.split()[0] for line in commands()}
    assert {"bash", "fedsafe", "flwr", "python"} <= kinds


@pytest.mark.parametrize("line", [c for c in commands() if c.startswith("fedsafe ")])
def test_fedsafe_commands_answer_help(line):
    with pytest.raises(SystemExit) as done:
        main([shlex.split(line)[1], "--help"])
    assert done.value.code == 0


@pytest.mark.parametrize("line", [c for c in commands() if c.startswith(("flwr run", "PYTHONPATH"))])
def test_flwr_run_examples_pass_the_config_checks(line, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "aggregators"))  # mydefense stands for a user's module
    words = shlex.split(line.removeprefix("PYTHONPATH=$PWD "))
    spec = words[words.index("--run-config") + 1]
    config = parse_config_args([spec])
    if "mydefense:ClippedMean" in spec:
        config["defense.aggregator"] = "user_agg:ClippedMean"
    from_run_config(config)


@pytest.mark.parametrize("line", [c for c in commands() if c.startswith(("bash ", "python "))])
def test_scripts_and_files_named_exist(line):
    assert (ROOT / shlex.split(line)[1]).is_file(), line


def test_deploy_local_answers_help():
    out = subprocess.run([sys.executable, "deploy/local.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--nodes" in out.stdout
