"""A whole federation on this machine, as real processes: SuperLink + N SuperNodes started with
the deploy/ scripts (TLS + SuperNode authentication by default), one `flwr run`, stopped by PID.

    python deploy/local.py --nodes 3                         # TLS + auth, the default experiment
    python deploy/local.py --nodes 3 --insecure              # plain HTTP, no auth: a quick try
    python deploy/local.py --nodes 3 --run-config "num-server-rounds=2 clients.num=3"

Each process runs in its own process group (its ClientApps and node worker included) and is
stopped as a group at the end, also on Ctrl-C. Files (certificates, keys, logs, FLWR_HOME) go to
--dir (default: a fresh temporary folder). The tests and bench/deployment.py use the same class.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process started in its own session: stopping it stops its whole process group."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path):
        self.name, self.log = name, log
        with open(log, "w") as out:
            self.popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        """Signal the process group, then SIGKILL whatever of it (or of the leader's descendants
        that moved to a group of their own, like the SuperLink's SuperExec) is left."""
        others = _descendants(self.pid)
        for pid in [-self.pid, *others]:  # -pid: the whole group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (_group_alive(self.pid) or any(map(_alive, others))):
            time.sleep(0.1)
        _kill_group(self.pid)
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a zombie waits only for its parent to reap it: as good as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process left in the group?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def wait_for_port(port: int, proc: Proc, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{proc.name}: nothing listens on {port} after {seconds:.0f}s")


class LocalFederation:
    """SuperLink + SuperNodes on loopback. `simulation=True`: a simulation SuperLink instead (no
    SuperNodes; Ray runs the clients: a local Ray, or the existing cluster at `ray_address`)."""

    def __init__(self, root: Path, num_nodes: int, *, insecure: bool = False, simulation: bool = False,
                 ray_address: str | None = None, env: dict | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.num_nodes, self.insecure, self.simulation = num_nodes, insecure or simulation, simulation
        self.ray_address = ray_address  # simulation on this existing Ray cluster (deploy/ray-superlink.sh)
        self.connection = "fedsafe-ray" if ray_address else "fedsafe"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.deploy_dir = self.root / "deploy"
        self.flwr_home = self.root / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        self.env = {**os.environ, "FEDSAFE_DEPLOY_DIR": str(self.deploy_dir), "FLWR_HOME": str(self.flwr_home),
                    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(BIN.parent),
                    **(env or {})}
        self.superlink: Proc | None = None
        self.nodes: dict[int, Proc] = {}

    # -- setup ----------------------------------------------------------------------------------
    def script(self, name: str, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run(["bash", str(DEPLOY / name), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"deploy/{name} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def make_credentials(self, extra_keys: int = 0) -> None:
        """CA + server certificate, and one key pair per node (plus `extra_keys` unregistered)."""
        self.script("certs.sh")
        self.script("node-key.sh", *map(str, range(self.num_nodes + extra_keys)))

    def key(self, k: int) -> Path:
        return self.deploy_dir / "keys" / f"node-{k}"

    def start_superlink(self) -> None:
        log = self.root / "superlink.log"
        if self.ray_address:
            command = ["bash", str(DEPLOY / "ray-superlink.sh"), "--ray-address", self.ray_address,
                       "--num-supernodes", str(self.num_nodes), "--port", str(self.port)]
        elif self.simulation:
            command = [str(BIN / "flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
                       "--port", str(self.port)]
        else:
            command = ["bash", str(DEPLOY / "superlink.sh"), "--host", "127.0.0.1", "--port", str(self.port)]
            command += ["--insecure"] if self.insecure else []
        self.superlink = Proc("superlink", command, self.env, log)
        wait_for_port(self.port, self.superlink)
        if self.simulation and not self.ray_address:
            self._write_simulation_connection()

    def _write_simulation_connection(self) -> None:
        (self.flwr_home / "config.toml").write_text(
            '[superlink]\ndefault = "fedsafe"\n\n[superlink.fedsafe]\n'
            f'address = "{self.address}"\ninsecure = true\n'
            f"options.num-supernodes = {self.num_nodes}\n"
            "options.backend.client-resources.num-cpus = 1\n")

    def register(self, nodes) -> None:
        self.script("register.sh", *[f"{self.key(k)}.pub" for k in nodes])

    def start_supernode(self, k: int, *, key: Path | None = None, num_partitions: int | None = None) -> Proc:
        args = ["--superlink", self.address, "--partition-id", str(k),
                "--num-partitions", str(num_partitions or self.num_nodes), "--port", str(free_port())]
        args += ["--insecure"] if self.insecure else ["--key", str(key or self.key(k))]
        proc = Proc(f"supernode-{k}", ["bash", str(DEPLOY / "supernode.sh"), *args], self.env,
                    self.root / f"supernode-{k}.log")
        self.nodes[k] = proc
        return proc

    def start(self) -> "LocalFederation":
        """Everything for a run: credentials (TLS), SuperLink, registration, all SuperNodes."""
        if not self.insecure:
            self.make_credentials()
        self.start_superlink()
        if self.simulation:
            return self
        if not self.insecure:
            self.register(range(self.num_nodes))
        for k in range(self.num_nodes):
            self.start_supernode(k)
        return self

    # -- use ------------------------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def online_nodes(self) -> int:
        out = self.flwr("supernode", "list", "fedsafe", "--format", "json").stdout
        return out.count('"online"')

    def wait_online(self, n: int, seconds: float = 90.0) -> None:
        deadline = time.monotonic() + seconds
        while self.online_nodes() < n:
            dead = [p.name for p in self.nodes.values() if not p.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{n} SuperNodes not online (exited: {dead}); logs in {self.root}")
            time.sleep(1.0)

    def run(self, *run_config: str | Path, timeout: float = 600.0, echo: bool = False,
            app: Path = ROOT) -> tuple[str, Path | None]:
        """`flwr run APP fedsafe --stream --run-config X ...`; returns its output and the run
        directory it printed (None if none: the ServerApp failed before starting)."""
        command = [str(BIN / "flwr"), "run", str(app), self.connection, "--stream"]
        for item in run_config:
            command += ["--run-config", str(item)]
        lines = []
        with open(self.root / "flwr-run.log", "w") as log:
            proc = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, text=True)
            timer = threading.Timer(timeout, lambda: _kill_group(proc.pid))
            timer.start()
            try:
                for line in proc.stdout:
                    lines.append(line)
                    log.write(line)
                    if echo:
                        print(line, end="", flush=True)
                proc.wait()
            finally:
                timer.cancel()
                _kill_group(proc.pid)  # `flwr run` is done; nothing of it may linger
        from fedsafe.check_run import RUN_DIR_LINE

        text = "".join(lines)
        found = RUN_DIR_LINE.findall(text)
        return text, Path(found[-1]) if found else None

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.superlink]:
            if proc is not None:
                proc.stop()

    def __enter__(self) -> "LocalFederation":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def federation_size(nodes: int) -> dict:
    """clients.num = nodes, and the default experiment's per-round and malicious shares scaled to
    it (3 nodes: 3 per round, 1 malicious), so a small local federation runs as is."""
    from fedsafe.config import KEYS

    default = {k: KEYS[k].default for k in ("clients.num", "clients.per-round", "attack.num-malicious")}
    return {"clients.num": nodes, "clients.per-round": min(default["clients.per-round"], nodes),
            "attack.num-malicious": round(default["attack.num-malicious"] * nodes / default["clients.num"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10, help="SuperNodes = clients.num (default 10)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP, no SuperNode auth")
    parser.add_argument("--run-config", default="", help="passed to flwr run (a TOML file or 'k=v ...')")
    parser.add_argument("--dir", type=Path, default=None, help="where certificates, keys and logs go")
    args = parser.parse_args(argv)
    from fedsafe.cli import parse_overrides
    from fedsafe.config import ConfigError, from_run_config
    from fedsafe.sweep import to_toml

    overrides = {**federation_size(args.nodes), **parse_overrides([args.run_config] if args.run_config else [])}
    try:
        from_run_config(overrides)  # a bad key fails here, before any process starts
    except ConfigError as err:
        print(f"deploy/local.py: config error: {err}", file=sys.stderr)
        return 2
    root = args.dir or Path(tempfile.mkdtemp(prefix="fedsafe-local-"))
    # One file: flwr 1.42 merges several --run-config strings table by table, so a later
    # 'attack.data=...' would drop an earlier 'attack.num-malicious=...'.
    config = root / "run-config.toml"
    config.write_text(to_toml(overrides))
    print(f"local federation in {root}: {args.nodes} SuperNodes, "
          f"{'insecure' if args.insecure else 'TLS + SuperNode auth'}", flush=True)
    # Ctrl-C / SIGTERM: raise, so the finally below stops every process group.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fed = LocalFederation(root, args.nodes, insecure=args.insecure)
    try:
        fed.start()
        fed.wait_online(args.nodes)
        _, run_dir = fed.run(config, timeout=7 * 24 * 3600, echo=True)
    finally:
        fed.stop()
    from fedsafe.check_run import judge

    if run_dir is None:
        print(f"FAILED: the run printed no run directory; logs in {root}")
        return 1
    code, line = judge(run_dir, str(root))
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
