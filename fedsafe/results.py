"""The run directory and its results.json, written atomically after every change so a killed
run keeps everything it measured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedsafe.config import ConfigError, Settings
from fedsafe.aggregators.detection import detection_metrics
from fedsafe.files import read_json, write_json


def default_runs_root() -> Path:
    return Path.home() / ".fedsafe" / "runs"


RESUME_KEYS = ("resume-from", "output-dir")  # may differ between a run and its resumption


def create_run_dir(settings: Settings) -> Path:
    """A fresh directory per run (or the one being resumed), with config.json beside results."""
    if settings.resume_from:
        run_dir = Path(settings.resume_from).expanduser().resolve()
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"resume-from={settings.resume_from!r}: not a fedsafe run directory (no config.json)")
        saved = read_json(run_dir / "config.json")
        for key, value in settings.flat.items():
            if key not in RESUME_KEYS and saved.get(key, value) != value:
                raise ConfigError(f"{key}={value!r}: the run being resumed used {saved[key]!r}")
    else:
        root = Path(settings.output_dir).expanduser() if settings.output_dir else default_runs_root()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{settings.defense.aggregator.replace(':', '.')}-seed{settings.seed}"
        run_dir = root / name
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = root / f"{name}-{suffix}"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", settings.flat)
    return run_dir.resolve()


class Recorder:
    """results.json: config, per-round client records, detection, evaluations."""

    def __init__(self, run_dir: Path, settings: Settings):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "results.json"
        self.data: dict[str, Any] = {"config": settings.flat, "run_dir": str(self.run_dir),
                                     "rounds": [], "eval": {}, "timings": {}}
        self.save()

    @classmethod
    def load(cls, run_dir: Path, settings: Settings) -> "Recorder":
        """Continue an existing results.json (resume)."""
        recorder = cls.__new__(cls)
        recorder.run_dir = Path(run_dir)
        recorder.path = recorder.run_dir / "results.json"
        recorder.data = read_json(recorder.path)
        recorder.data["config"] = settings.flat
        return recorder

    def save(self) -> None:
        write_json(self.path, self.data)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def set_eval(self, stage: str, metrics: dict[str, Any]) -> None:
        self.data["eval"][stage] = metrics
        self.save()

    def add_timing(self, stage: str, seconds: float) -> None:
        self.data["timings"][stage] = round(self.data["timings"].get(stage, 0.0) + seconds, 2)
        self.save()

    def add_round(self, record: dict[str, Any]) -> None:
        """Append one round (replacing a same-numbered one on resume) and refresh detection."""
        rounds = [r for r in self.data["rounds"] if r["round"] != record["round"]] + [record]
        self.data["rounds"] = sorted(rounds, key=lambda r: r["round"])
        clients = [c for r in self.data["rounds"] for c in r["clients"]]
        self.data["detection"] = detection_metrics([c["flagged"] for c in clients],
                                                   [c["malicious"] for c in clients])
        self.save()
