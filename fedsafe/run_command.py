"""`fedsafe run [--log FILE] [APP] [SUPERLINK] [--run-config ...]`: one experiment, `flwr run
--stream` under the rules of fedsafe/launch.py, shown through fedsafe/console.py.

Before anything starts it checks what a run would fail on late: the Flower environment, the
config with every file it names (fedsafe/preflight.py), and other runs active on the SuperLink.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedsafe.check_run import ERROR_LINE, RUN_DIR_LINE, verdict
from fedsafe.console import Console, dropped_lines
from fedsafe.launch import Flwr, app_defaults, federation, flwr_binary
from fedsafe.local_superlink import LocalSuperLink

VALUE_OPTIONS = ("--run-config", "-c", "--federation", "--federation-config", "--format")


def split_flwr_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(positional arguments [APP, SUPERLINK], --run-config values) of a `flwr run` line."""
    positional, configs, i = [], [], 0
    while i < len(args):
        arg = args[i]
        name, equals, value = arg.partition("=")
        if arg in VALUE_OPTIONS:
            if arg in ("--run-config", "-c") and i + 1 < len(args):
                configs.append(args[i + 1])
            i += 2
            continue
        if equals and name in VALUE_OPTIONS:
            configs += [value] if name in ("--run-config", "-c") else []
        elif not arg.startswith("-"):
            positional.append(arg)
        i += 1
    return positional, configs


def run_command(flwr_args: list[str], log: Path | None = None, env: dict | None = None,
                binary: str | None = None) -> int:
    """Check, run, clean up, then judge the run by its files (`flwr run` exits 0 even when the
    ServerApp fails): 0 and the run's one-line summary, or 1 and what is missing."""
    from fedsafe.cli import parse_overrides
    from fedsafe.config import from_run_config
    from fedsafe.preflight import check

    env = dict(os.environ if env is None else env)
    positional, configs = split_flwr_args(flwr_args)
    app = Path(positional[0] if positional else ".").expanduser().resolve()
    superlink = positional[1] if len(positional) > 1 else None
    flwr = Flwr(env, federation(env, superlink), superlink, binary or flwr_binary())
    check(from_run_config({**app_defaults(app), **parse_overrides(configs)}))
    args = ([] if positional else ["."]) + flwr_args + ([] if "--stream" in flwr_args else ["--stream"])

    console = Console(dropped_lines(flwr.connection))
    say = lambda message: console.line(f"fedsafe: {message}")  # noqa: E731
    local = LocalSuperLink(flwr)
    if not local.managed and (busy := flwr.busy_note()):
        say(busy)
    out = open(log, "w", buffering=1) if log else None
    marks: list[str] = []  # the lines the verdict reads: run directory, the ServerApp's error
    try:
        def on_line(line: str) -> None:
            if out:
                out.write(line)
            if RUN_DIR_LINE.search(line) or ERROR_LINE.search(line):
                marks.append(line)
            console.line(line)

        outcome = flwr.run(args, on_line, say=say)
    finally:
        console.close()
        local.stop(say)
        if out:
            out.close()
    code, line = verdict("".join(marks), str(log) if log else "the output above")
    print(line, flush=True)
    return outcome.returncode or code
