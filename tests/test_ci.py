"""CI runs exactly the README's test command: the two are written out in two files, so a test
keeps them equal."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> list[str]:
    """The lines of the first ```bash block after the line starting "Run the tests"."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^Run the tests.*?^```bash\n(.*?)^```", text, re.M | re.S)
    assert block, "README.md has no ```bash block after 'Run the tests'"
    return [line for line in block.group(1).splitlines() if line.strip()]


def ci_commands() -> list[str]:
    """What .ci/run executes after its preamble (comments, shebang, `set`, `cd` to the root)."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith(("#", "set ", "cd "))]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    assert readme_test_command() == ["bash scripts/test.sh"]
    assert ci_commands() == readme_test_command()
