"""`flwr run` as a command that owns its run: `fedsafe run`, scripts/run_default.sh, `fedsafe sweep`.

A plain `flwr run --stream` only streams logs: Ctrl-C ends the stream while the run goes on in
the SuperLink. Here the run ends with its command: on SIGINT, SIGTERM or SIGHUP (or past a
timeout) the run is stopped on the SuperLink (`flwr stop RUN_ID`, the id `flwr run` prints), then
`flwr run` itself. The local SuperLink `flwr run` may start is fedsafe/local_superlink.py's.
SIGKILL cannot be caught: then `flwr list` and `flwr stop RUN_ID` do it by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flwr.common.config import flatten_dict

SETUP_HINT = ("set up the Flower environment first: `source scripts/flower_env.sh` (sets FLWR_HOME and "
              "writes a local simulation federation with FEDSAFE_NUM_CLIENTS supernodes, default 10)")
RUN_STARTED = re.compile(r"Successfully started run (\d+)")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SetupError(RuntimeError):
    """The Flower environment cannot run the app; the message says how to fix it."""


class Interrupted(Exception):
    """A stop signal arrived; the command cleans up and exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def flwr_binary() -> str:
    local = Path(sys.executable).parent / "flwr"
    return str(local) if local.is_file() else (shutil.which("flwr") or "flwr")


def flwr_home(env: dict) -> Path:
    return Path(env["FLWR_HOME"]).expanduser() if env.get("FLWR_HOME") else Path.home() / ".flwr"


def federation(env: dict, superlink: str | None = None) -> dict:
    """The SuperLink connection `flwr run` will use, from FLWR_HOME/config.toml, checked."""
    if not env.get("FLWR_HOME"):
        raise SetupError(f"FLWR_HOME is not set; {SETUP_HINT}")
    path = flwr_home(env) / "config.toml"
    if not path.is_file():
        raise SetupError(f"{path} does not exist; {SETUP_HINT}")
    table = tomllib.loads(path.read_text()).get("superlink", {})
    name = superlink or table.get("default")
    if not name or not isinstance(table.get(name), dict):
        which = f"'{name}' is not declared" if name else "no default SuperLink connection is set"
        raise SetupError(f"{path}: {which} ([superlink] default = '...' and a [superlink.<name>] table); "
                         f"{SETUP_HINT}")
    return {"name": name, **table[name]}


def app_defaults(app: Path) -> dict:
    """The app's `[tool.flwr.app.config]`, flat: what a run gets for keys not overridden."""
    path = app / "pyproject.toml"
    if not path.is_file():
        raise SetupError(f"{app}: not a Flower app folder (no pyproject.toml)")
    return flatten_dict(tomllib.loads(path.read_text())["tool"]["flwr"]["app"]["config"])


@contextlib.contextmanager
def _stop_signals_handled(handler):
    """STOP_SIGNALS go to `handler` while inside; the previous handlers come back after."""
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def stop_signals():
    """SIGINT/SIGTERM/SIGHUP raise `Interrupted` in the main thread while inside."""
    def handler(signum, _frame):
        raise Interrupted(signum)

    return _stop_signals_handled(handler)


def signals_ignored():
    """Cleanup runs to its end: a second Ctrl-C would leave a run or a SuperLink behind."""
    return _stop_signals_handled(signal.SIG_IGN)


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process group `proc` leads (it was started with start_new_session), then
    SIGKILL after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


@dataclass
class Outcome:
    returncode: int  # flwr run's, or 124 past the timeout
    run_id: str | None
    stopped: str | None = None  # "timeout" when it was stopped early


@dataclass
class Flwr:
    """The flwr CLI for one SuperLink connection (`federation()`); `binary` is the CLI to call."""
    env: dict
    connection: dict
    superlink: str | None = None  # the connection's name as given on the command line (None: default)
    binary: str = field(default_factory=flwr_binary)

    def _target(self) -> list[str]:
        return [self.superlink] if self.superlink else []

    def active_runs(self) -> list[dict]:
        """Runs on the SuperLink that have not finished (`flwr list --format json`); empty when it
        cannot be asked."""
        try:
            out = subprocess.run([self.binary, "list", self.connection["name"], "--format", "json"], env=self.env,
                                 capture_output=True, text=True, timeout=60, check=False).stdout
            runs = json.loads(out[out.index("{"):])["runs"]
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError):
            return []
        return [r for r in runs if not str(r.get("status", "")).startswith("finished")]

    def busy_note(self) -> str | None:
        """A note on runs already active on the SuperLink (they share its CPUs), or None."""
        busy = self.active_runs()
        if not busy:
            return None
        name = self.connection["name"]
        return (f"{len(busy)} other run(s) active on SuperLink '{name}', sharing its CPUs: "
                + ", ".join(f"{r.get('run-id')} ({r.get('status')})" for r in busy)
                + f"; `flwr list {name}` lists them, `flwr stop RUN_ID {name}` stops one")

    def stop(self, run_id: str) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([self.binary, "stop", run_id, *self._target()], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60, check=False)

    def run(self, args: list[str], on_line: Callable[[str], None], *, timeout: float | None = None,
            say: Callable[[str], None] = print) -> Outcome:
        """`flwr run ARGS`, each output line to `on_line`. A stop signal, the timeout or an error
        stops the run on the SuperLink and `flwr run` itself; a signal then propagates as
        `Interrupted`."""
        proc = subprocess.Popen([self.binary, "run", *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                start_new_session=True)
        run_id, why = None, "error"
        late = threading.Event()

        def past_timeout():
            late.set()
            stop_group(proc)

        timer = threading.Timer(timeout, past_timeout) if timeout else None
        try:
            with stop_signals():
                if timer:
                    timer.start()
                for line in proc.stdout:
                    if run_id is None and (found := RUN_STARTED.search(line)):
                        run_id = found.group(1)
                    on_line(line)
                proc.wait()
            why = "timeout" if late.is_set() else None
        except Interrupted as interrupted:
            why = str(interrupted)
            raise
        finally:
            if timer:
                timer.cancel()
            if why:  # the run must not outlive this command
                with signals_ignored():
                    self._stop_run(proc, run_id, why, say)
        return Outcome(124 if why else proc.returncode, run_id, why)

    def _stop_run(self, proc: subprocess.Popen, run_id: str | None, why: str, say: Callable[[str], None]) -> None:
        """The run on the SuperLink first, then the `flwr run` process streaming it."""
        if run_id is None:
            say(f"{why}: no run id was printed yet; `flwr list` shows whether a run started")
        else:
            say(f"{why}: stopping run {run_id} (flwr stop {run_id})")
            self.stop(run_id)
        if proc.poll() is None:
            stop_group(proc)
