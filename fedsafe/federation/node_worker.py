"""A SuperNode's model cache: one long-lived worker process runs the ClientApp's train handler.

A flwr 1.42 SuperNode starts a fresh `flwr-clientapp` process for every message, so the
per-process caches of client.py and models.py (model load, 4-bit quantization, LoRA, tokenized
data) would be rebuilt every round (34 s a round on the tiny test model, nearly all loading).
`in_node_worker(app, reset)` makes a Flower mod for the train handler: it ships the message from a
`flwr-clientapp` process to this node's worker (started on first use), which imports the ClientApp
named by `app` ("module:attr") and runs it with its caches warm, and returns the reply; `reset`
names the function that drops those caches when another model arrives. The worker knows no
fedsafe module by name. Ray actors and in-process runs call the handler directly.

FEDSAFE_NODE_WORKER: unset = on inside `flwr-clientapp` only; 1 = always; 0 = never.
FEDSAFE_WORKER_IDLE: seconds without work before the worker exits (default 1800).

The worker stays in the SuperNode's process group (stopping the group stops it), exits with the
SuperExec that launched its first ClientApp, and holds one model (another model or seed replaces
it). One per (node, app code); one message at a time, like a SuperNode. Wire format, both ways:
[8-byte length][JSON header][8-byte length][payload: message content and context state as
Flower's RecordDict protobufs]; no pickle. The socket is in a 0700 directory of this user.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("fedsafe.federation.node_worker")  # also when run as __main__ (the worker)

SPAWN_WAIT_SECONDS = 120.0  # interpreter start; heavy imports happen later, inside the first request
MAX_HEADER_BYTES = 16 * 2**20
_FRAME = struct.Struct(">Q")


def enabled() -> bool:
    mode = os.environ.get("FEDSAFE_NODE_WORKER", "")
    if mode in ("0", "1"):
        return mode == "1"
    return Path(sys.argv[0]).name == "flwr-clientapp"


# ---- ClientApp side --------------------------------------------------------------------------

def in_node_worker(app: str, reset: str):
    """A Flower mod: outside a `flwr-clientapp` process it just calls the handler; inside one, this
    node's worker (started if needed) runs the ClientApp `app` ("module:attr") and the mod returns
    the worker's reply. `reset` ("module:attr") drops the app's per-process caches."""

    def mod(msg, context, call_next):
        if not enabled():
            return call_next(msg, context)
        return _forward(msg, context, app, reset)

    return mod


def _forward(msg, context, app: str, reset: str):
    from flwr.app import Error, Message

    header = {"op": "handle", "metadata": {k: getattr(msg.metadata, k) for k in _METADATA},
              "node_id": context.node_id, "node_config": dict(context.node_config),
              "run_config": dict(context.run_config), "app": app, "reset": reset}
    with _connect(socket_path(context.node_id)) as sock:
        _send(sock, header, _pack(msg.content, context.state))
        reply, payload = _recv(sock)
    if not reply.get("ok"):
        raise RuntimeError(f"node worker failed: {reply.get('error')}")
    content, context.state = _unpack(payload)
    if "error" in reply:  # the handler answered with an error reply of its own
        return Message(Error(code=reply["error"]["code"], reason=reply["error"]["reason"]), reply_to=msg)
    return Message(content, reply_to=msg)


def worker_info(node_id: int) -> dict | None:
    """The running worker of this node (its pid, the model it holds), or None."""
    sock = _try_connect(socket_path(node_id))
    if sock is None:
        return None
    with sock:
        _send(sock, {"op": "info"}, b"")
        return _recv(sock)[0]


def socket_path(node_id: int) -> Path:
    """Per node and per app code: a new FAB (code change) gets a fresh worker."""
    code = Path(__file__).resolve().parent
    key = hashlib.sha256(f"{node_id}:{code}".encode()).hexdigest()[:16]
    return _private_dir() / f"node-{key}.sock"


def _private_dir() -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = base / f"fedsafe-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} must be owned by this user with mode 0700")
    return path


def _try_connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:  # no socket file yet, or a dead worker's file: refused
        sock.close()
        return None


def _connect(path: Path) -> socket.socket:
    if sock := _try_connect(path):
        return sock
    with open(path.parent / "spawn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two ClientApps of one node never spawn two workers
        if sock := _try_connect(path):
            return sock
        worker = _spawn(path)
        deadline = time.monotonic() + SPAWN_WAIT_SECONDS
        while (sock := _try_connect(path)) is None:
            if worker.poll() is not None:
                raise RuntimeError(f"node worker exited with code {worker.returncode}; see the SuperNode's log")
            if time.monotonic() > deadline:
                worker.kill()
                raise TimeoutError(f"node worker did not listen on {path} within {SPAWN_WAIT_SECONDS:.0f}s")
            time.sleep(0.05)
        return sock


def _spawn(path: Path) -> subprocess.Popen:
    """Same interpreter, same fedsafe code (the FAB folder), same environment (GPUs included).
    Its output joins this process's, i.e. the SuperNode's log."""
    code_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "FEDSAFE_NODE_WORKER": "0",
           "PYTHONPATH": os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p)}
    # The SuperExec that started this ClientApp lives as long as the SuperNode does.
    command = [sys.executable, "-m", "fedsafe.federation.node_worker", str(path), "--parent-pid", str(os.getppid())]
    log.info("starting the node worker for %s", path.name)
    # cwd: `python -m` puts it first on sys.path, and the SuperNode's (a checkout?) is not the FAB.
    return subprocess.Popen(command, env=env, cwd=code_root, stdin=subprocess.DEVNULL, close_fds=True)


# ---- wire format -----------------------------------------------------------------------------

def _send(sock: socket.socket, header: dict, payload: bytes) -> None:
    head = json.dumps(header).encode()
    sock.sendall(_FRAME.pack(len(head)) + head + _FRAME.pack(len(payload)))
    if payload:  # an empty one is complete already: the worker may have answered and closed
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("node worker connection closed mid-message")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> tuple[dict, bytes]:
    (n,) = _FRAME.unpack(_recv_exact(sock, _FRAME.size))
    if n > MAX_HEADER_BYTES:
        raise ConnectionError(f"node worker header of {n} bytes: not a fedsafe worker")
    header = json.loads(_recv_exact(sock, n))
    (m,) = _FRAME.unpack(_recv_exact(sock, _FRAME.size))
    return header, _recv_exact(sock, m)


_METADATA = ("run_id", "message_id", "src_node_id", "dst_node_id", "reply_to_message_id", "group_id",
             "created_at", "ttl", "message_type", "src_task_id", "dst_task_id")


def _pack(content, state) -> bytes:
    """Two RecordDicts (message content, context state) as length-prefixed protobufs."""
    from flwr.common.serde import recorddict_to_proto

    parts = [recorddict_to_proto(r).SerializeToString() for r in (content, state)]
    return b"".join(_FRAME.pack(len(p)) + p for p in parts)


def _unpack(payload: bytes):
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    out, view = [], memoryview(payload)
    for _ in range(2):
        (n,) = _FRAME.unpack(view[:_FRAME.size])
        out.append(recorddict_from_proto(ProtoRecordDict.FromString(bytes(view[_FRAME.size:_FRAME.size + n]))))
        view = view[_FRAME.size + n:]
    return tuple(out)


# ---- worker side -----------------------------------------------------------------------------

class _Worker:
    def __init__(self):
        self.model_key = None

    def handle(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        if header.get("op") == "info":
            return {"ok": True, "pid": os.getpid(), "model": repr(self.model_key)}, b""
        if header.get("op") != "handle":
            raise ValueError(f"unknown op {header.get('op')!r}")
        from flwr.app import Context, Message, Metadata

        app = _resolve(header["app"])
        self._keep_one_model(_model_key(header["run_config"]), _resolve(header["reset"]))
        content, state = _unpack(payload)
        msg = Message(content=content, metadata=Metadata(**header["metadata"]))
        context = Context(run_id=msg.metadata.run_id, node_id=header["node_id"], node_config=header["node_config"],
                          state=state, run_config=header["run_config"])
        out = app(msg, context)  # the same ClientApp, handler and mods (this one passes through here)
        if not out.has_error():
            return {"ok": True}, _pack(out.content, context.state)
        error = {"code": out.error.code, "reason": out.error.reason}
        return {"ok": True, "error": error}, _pack(type(state)(), context.state)

    def _keep_one_model(self, key: str, reset) -> None:
        """A run with another model or seed: `reset()` drops the app's caches, so one worker never
        holds two models."""
        if self.model_key is not None and key != self.model_key:
            import gc

            import torch

            log.info("node worker: another model or seed; dropping the cached one")
            reset()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.model_key = key


def _model_key(run_config: dict) -> str:
    """What decides the model a worker holds: the model.* keys and the seed (LoRA init)."""
    return json.dumps({k: v for k, v in sorted(run_config.items()) if k.startswith("model.") or k == "seed"})


def _resolve(ref: str):
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _exit_with_parent(parent_pid: int, path: Path) -> None:
    def watch():
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    path.unlink()  # still ours: no worker is started for a path that answers
                os._exit(0)
            except PermissionError:
                pass  # exists, owned by someone else: keep going
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(path: Path, parent_pid: int | None, idle_seconds: float) -> None:
    from fedsafe.logs import console_logging

    console_logging()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopped node: clean up the socket file
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead worker's socket file (the caller holds the lock and was refused)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(4)
    server.settimeout(1.0)
    if parent_pid:
        _exit_with_parent(parent_pid, path)
    log.info("node worker %d serving %s", os.getpid(), path)
    worker, last = _Worker(), time.monotonic()
    try:
        while time.monotonic() - last < idle_seconds:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(600.0)  # for reading a request and writing a reply, not for training
                try:
                    reply, payload = worker.handle(*_recv(conn))
                except Exception as err:  # the ClientApp turns it into an error reply for the server
                    log.exception("node worker: request failed")
                    reply, payload = {"ok": False, "error": f"{type(err).__name__}: {err}"}, b""
                with contextlib.suppress(OSError):  # the ClientApp is gone (its node stopped it)
                    _send(conn, reply, payload)
            last = time.monotonic()
        log.info("node worker %d: idle for %.0fs, exiting", os.getpid(), idle_seconds)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # first: a ClientApp arriving now spawns a fresh worker instead of waiting
        server.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fedsafe.federation.node_worker",
                                     description="fedsafe node worker (started by the ClientApp; not by hand)")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--idle-seconds", type=float, default=float(os.environ.get("FEDSAFE_WORKER_IDLE", 1800)))
    args = parser.parse_args(argv)
    serve(args.socket, args.parent_pid, args.idle_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
