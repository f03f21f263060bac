"""The local SuperLink that `flwr run` starts by itself, and stopping exactly that process.

flwr 1.42, for a connection whose address is `:local:` (scripts/flower_env.sh writes one), starts
`flower-superlink --simulation ... --log-file $FLWR_HOME/local-superlink/superlink.log` when
nothing answers on 127.0.0.1:39091 (FLWR_LOCAL_SUPERLINK_HTTP_API_PORT), detached, and leaves it
running (flwr/cli/local_superlink.py). A command that caused that start stops it once done: the
process is known by its `--log-file` (this FLWR_HOME's) and by being new since the command began,
so a SuperLink of another FLWR_HOME, or one that was already running, is never touched; nor is it
stopped while another run is active on it.
"""

from __future__ import annotations

import contextlib
import urllib.request
from pathlib import Path
from typing import Callable

from fedsafe.launch import Flwr, flwr_home

LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
LOCAL_PORT = 39091
GRACE_SECONDS = 20  # between SIGTERM and SIGKILL


class LocalSuperLink:
    def __init__(self, flwr: Flwr):
        self.flwr = flwr
        self.port = int(flwr.env.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", LOCAL_PORT))
        self.log_file = (flwr_home(flwr.env) / "local-superlink" / "superlink.log").resolve()
        self.managed = flwr.connection.get("address") in LOCAL_ADDRESSES and not self.up()
        self.before = self.pids() if self.managed else set()

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as response:
                return response.status == 200
        except OSError:
            return False

    def pids(self) -> set[int]:
        """The running `flower-superlink` processes that log to this FLWR_HOME's file."""
        import psutil  # a dependency of accelerate and peft

        found = set()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            args = proc.info["cmdline"] or []
            if not any(a.endswith("flower-superlink") for a in args) or "--log-file" not in args[:-1]:
                continue
            if Path(args[args.index("--log-file") + 1]).expanduser().resolve() == self.log_file:
                found.add(proc.info["pid"])
        return found

    def started_here(self) -> list[int]:
        return sorted(self.pids() - self.before) if self.managed else []

    def stop(self, say: Callable[[str], None]) -> None:
        """Stop the SuperLink this command caused to start, by PID, unless runs remain on it."""
        import psutil

        pids = self.started_here()
        if not pids:
            return
        which = ", ".join(map(str, pids))
        if busy := self.flwr.active_runs():
            say(f"leaving the local SuperLink (PID {which}) running: {len(busy)} run(s) still active on it")
            return
        # Its children too: the simulation it runs (the ServerApp, Ray and its workers) lives on
        # after `flwr stop` and after the SuperLink itself, holding the cores.
        tree = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                tree += [proc, *proc.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=GRACE_SECONDS)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        children = f" and the {len(tree) - len(pids)} processes it ran (the simulation, Ray)" if len(tree) > len(pids) else ""
        say(f"stopped the local SuperLink this command started (PID {which}){children}")
