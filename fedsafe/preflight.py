"""Open every file and folder a config names and check its shape, before any model loads.

`fedsafe/config` checks that values are well formed (a path exists, a number is in range); this
module reads what they point to: a data file has rows with the columns the run will read, a
benchmark has a prompt column, a model folder has a config and a tokenizer, a run to resume has
its config. `fedsafe check-config` and the ServerApp call `check(settings)`; a problem is one
`ConfigError` line naming the key, the file and what was expected. Hub ids are left to the run:
reading them is the download this check exists to come before.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedsafe import data
from fedsafe.config import BUNDLED_MODEL, DATA_SUFFIXES, ConfigError, Settings
from fedsafe.eval.safety import HUB_BENCHMARKS, prompts_from_rows

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
FOLDER_DATA = ("*.jsonl", "*.json", "*.csv", "*.parquet", "*.arrow", "*/*.parquet", "*/*.arrow")


def _local(value: str) -> Path | None:
    """The file or folder a value names, or None for a keyword or a Hub id."""
    path = Path(value).expanduser()
    return path if path.is_dir() or path.suffix.lower() in DATA_SUFFIXES else None


def _rows(key: str, value: str, path: Path) -> list[dict]:
    """All rows of a data file, or the first rows of a dataset folder."""
    try:
        if path.is_dir():
            return _folder_rows(path)
        return data.load_rows(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{key}={value!r}: cannot read {path}: {err}") from None


def _folder_rows(path: Path, n: int = 5) -> list[dict]:
    if not any(next(path.glob(pattern), None) for pattern in FOLDER_DATA):
        raise ValueError("no data files (.jsonl/.json/.csv/.parquet/.arrow) in the folder")
    from datasets import load_dataset  # a folder is read as datasets reads it in the run

    splits = load_dataset(str(path), streaming=True)
    return [row for _, row in zip(range(n), splits[data.train_split(list(splits))])]


def pairs_file(key: str, value: str, instruction: str, response: str, *, unsafe_qa: bool = False) -> None:
    """A file/folder of {instruction, response} rows (or chat rows, or, where `unsafe_qa`, the
    BeaverTails layout prompt/response/is_safe) that yields at least one pair."""
    path = _local(value)
    if path is None:
        return
    rows = _rows(key, value, path)
    if not rows:
        raise ConfigError(f"{key}={value!r}: {path} has no rows")
    if unsafe_qa and "is_safe" in rows[0]:
        if not {"prompt", "response"} <= set(rows[0]):
            raise ConfigError(f"{key}={value!r}: rows with is_safe need 'prompt' and 'response' columns "
                              f"(has {sorted(rows[0])})")
        return
    try:
        pairs = data.rows_to_pairs(rows, instruction, response, source=str(path))
    except ValueError as err:
        raise ConfigError(f"{key}={value!r}: {err}") from None
    if not pairs:
        raise ConfigError(f"{key}={value!r}: {path} has no row with a non-empty instruction and response")


def safety_benchmark(key: str, value: str) -> None:
    """A CSV/JSONL file whose prompt column is one of eval.safety.PROMPT_COLUMNS, with prompts."""
    path = _local(value)
    if value == "bundled" or value in HUB_BENCHMARKS or path is None:
        return
    try:
        prompts = prompts_from_rows(_rows(key, value, path), str(path))
    except ValueError as err:
        raise ConfigError(f"{key}={value!r}: {err}") from None
    if not prompts:
        raise ConfigError(f"{key}={value!r}: {path} has no non-empty prompt")


def model_folder(key: str, value: str, *, tokenizer: bool = True) -> None:
    """A local model folder: a readable config.json with model_type, and tokenizer files."""
    path = Path(value).expanduser()
    if value in (BUNDLED_MODEL, "base", "rule") or not path.is_dir():
        return
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={value!r}: cannot read {path / 'config.json'}: {err}") from None
    if "model_type" not in config:
        raise ConfigError(f"{key}={value!r}: {path / 'config.json'} has no model_type (not a transformers model)")
    if tokenizer and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{key}={value!r}: no tokenizer in {path} (expected one of {', '.join(TOKENIZER_FILES)})")


def resume_dir(key: str, value: str) -> None:
    """A run directory to continue: it exists and its config.json reads."""
    if not value:
        return
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}={value!r}: no such folder")
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}={value!r}: not a fedsafe run directory ({err})") from None


def check(settings: Settings) -> None:
    """Every file and folder `settings` names, opened and checked; raises ConfigError."""
    d, a = settings.data, settings.attack
    resume_dir("resume-from", settings.resume_from)
    model_folder("model.name", settings.model.name)
    model_folder("attack.generator", a.generator)
    model_folder("posthoc.generator", settings.posthoc.generator)
    for judge in settings.eval.judges:  # eval.judge first
        model_folder("eval.judge" if judge == settings.eval.judge else "eval.judges", judge)
    if d.benign != "bundled":
        pairs_file("data.benign", d.benign, d.instruction_column, d.response_column)
    if a.data != "generated":
        pairs_file("attack.data", a.data, d.instruction_column, d.response_column, unsafe_qa=True)
    if a.instructions not in ("generated", "bundled"):
        pairs_file("attack.instructions", a.instructions, "instruction", "response")  # as generation_job reads it
    if settings.posthoc.level == "L1" and settings.posthoc.l1_source not in ("", "bundled"):
        pairs_file("posthoc.l1-source", settings.posthoc.l1_source, d.instruction_column, d.response_column)
    safety_benchmark("eval.safety.benchmark", settings.eval.safety.benchmark)
