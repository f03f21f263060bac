"""Per-round server state for resuming a killed run: the global adapter, the round number and
the state of each stateful part (the aggregator's, e.g. FoolsGold's history; the server
optimizer's moments; SCAFFOLD's control variates), written atomically after every round.

Client sampling and local training are seeded by (seed, round, client), so with this state a
resumed run continues exactly as the uninterrupted one would. Tensors go to safetensors, the
rest to JSON: nothing here unpickles.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fedsafe.files import read_json, write_json

STATE_DIR = "state"
PARTS_FILE = "aggregator.safetensors"  # every part's tensors (named when the aggregator was the only one)
TENSOR = "__tensor__"


def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able skeleton of `obj`; tensors move to `tensors` under their key path."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {TENSOR: path}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{path}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and set(obj) == {TENSOR}:
        return tensors[obj[TENSOR]]
    if isinstance(obj, dict):
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_state(run_dir: Path, server_round: int, global_state: dict[str, torch.Tensor],
               parts: dict[str, Any]) -> None:
    """`parts`: name -> object (aggregator, optimizer, ...); each one's `state_dict()`, if it
    has one, is saved under its name."""
    tensors: dict[str, torch.Tensor] = {}
    meta = {"round": server_round}
    for name, part in parts.items():
        meta[name] = _split(part.state_dict() if hasattr(part, "state_dict") else None, name, tensors)
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".state-"))
    save_file({k: v.contiguous() for k, v in global_state.items()}, str(tmp / "global.safetensors"))
    if tensors:
        save_file(tensors, str(tmp / PARTS_FILE))
    write_json(tmp / "meta.json", meta)  # last: its presence marks a complete state
    target = Path(run_dir) / STATE_DIR
    old = Path(run_dir) / ".state-old"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def load_state(run_dir: Path, parts: dict[str, Any]) -> tuple[int, "OrderedDict[str, torch.Tensor]"]:
    """The last completed round and global adapter; restores each part's state in place."""
    folder = Path(run_dir) / STATE_DIR
    if not (folder / "meta.json").is_file():
        old = Path(run_dir) / ".state-old"  # killed between the two renames above
        folder = old if (old / "meta.json").is_file() else folder
    if not (folder / "meta.json").is_file():
        raise FileNotFoundError(f"resume-from={str(run_dir)!r}: no saved round state in {folder}")
    meta = read_json(folder / "meta.json")
    tensors = load_file(str(folder / PARTS_FILE)) if (folder / PARTS_FILE).is_file() else {}
    for name, part in parts.items():
        if meta.get(name) is not None and hasattr(part, "load_state_dict"):
            part.load_state_dict(_join(meta[name], tensors))
    state = load_file(str(folder / "global.safetensors"))
    return int(meta["round"]), OrderedDict(sorted((k, v.float()) for k, v in state.items()))
