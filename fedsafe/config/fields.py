"""How a run-config key is declared: `setting(default, help, check)` on a settings dataclass
field, the checks themselves, and the one-line `ConfigError` they raise.

A check is `check(key, value)` and raises through `fail` with what is accepted; it runs once,
when the run config is parsed, before any model loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

BUNDLED_MODEL = "smollm2-135m-instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
JUDGE_RULES = ("rule", "paper-rule")  # fedsafe's refusal phrases, the paper's (eval/paper_rule.py)
PROBE_PROMPTS = 30  # lines in each of the bundled harmful_probe / helpful_probe files


class ConfigError(ValueError):
    """A run-config value that fedsafe cannot use; the message is one line."""


def setting(default: Any, help: str, check: Callable[[str, Any], None] | None = None, *,
            parse: Callable[[Any], Any] | None = None):
    """Declare one run-config key. Its name is the field's path in the settings tree, kebab-cased
    (`Settings.model.lora.target_modules` -> `model.lora.target-modules`); its type is the default's
    (bool, int, float or str: what Flower's run config carries); `parse` turns the flat value into
    the field's value (e.g. a comma-separated string into a tuple)."""
    value = parse(default) if parse else default
    return field(default=value, metadata={"default": default, "help": help, "check": check, "parse": parse})


def fail(key: str, value: Any, accepted: str) -> None:
    raise ConfigError(f"{key}={value!r}: expected {accepted}")


def csv_tuple(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def id_tuple(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(part) for part in csv_tuple(text)}))


def positive(key, v):
    if v <= 0:
        fail(key, v, "a number > 0")


def non_negative(key, v):
    if v < 0:
        fail(key, v, "a number >= 0")


def unit(key, v):
    if not 0.0 <= v <= 1.0:
        fail(key, v, "a number in [0, 1]")


def top_p(key, v):
    if not 0.0 < v <= 1.0:
        fail(key, v, "a number in (0, 1]")


def between(low, high):
    def check(key, v):
        if not low <= v <= high:
            fail(key, v, f"an integer in [{low}, {high}]")

    return check


def probe_prompts(key, v):
    if not 1 <= v <= PROBE_PROMPTS:
        fail(key, v, f"an integer in [1, {PROBE_PROMPTS}] (the bundled probe prompts)")


def choice(*options):
    def check(key, v):
        if v not in options:
            fail(key, v, "one of " + ", ".join(repr(o) for o in options))

    check.options = options  # shown in docs/configuration.md
    return check


def model_source(*words):
    """The bundled model, a model folder with config.json, a Hub id, or one of `words`."""
    def check(key, v):
        if v == BUNDLED_MODEL or v in words:
            return
        if Path(v).expanduser().is_dir():
            if not (Path(v).expanduser() / "config.json").is_file():
                fail(key, v, "a model folder containing config.json")
            return
        if not HUB_ID.match(v):
            extra = "".join(f"{w!r}, " for w in words)
            fail(key, v, f"{extra}'{BUNDLED_MODEL}', a local model folder, or a Hub id 'org/name'")
    return check


def data_source(*words):
    def check(key, v):
        if v in words:
            return
        p = Path(v).expanduser()
        if p.is_dir():  # a local dataset folder, read by datasets.load_dataset like a Hub id
            return
        if p.suffix.lower() in DATA_SUFFIXES:
            if not p.is_file():
                fail(key, v, f"an existing file (not found: {p})")
            return
        if not HUB_ID.match(v):
            accepted = ", ".join(repr(w) for w in words)
            fail(key, v, f"{accepted}, a .jsonl/.json/.csv file, a dataset folder, or a Hub dataset id 'org/name'")

    return check


def id_list(key, v):
    if v and not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", v):
        fail(key, v, "comma-separated partition ids such as '7,8,9' (or empty)")


def module_list(key, v):
    if not csv_tuple(v):
        fail(key, v, "comma-separated module names such as 'q_proj,v_proj'")


def template(key, v):
    """'auto', 'chat', 'alpaca', or a readable, non-empty Jinja chat-template file."""
    if v in ("auto", "chat", "alpaca"):
        return
    path = Path(v).expanduser()
    if not path.is_file():
        fail(key, v, "'auto', 'chat', 'alpaca', or an existing Jinja chat-template file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail(key, v, f"a readable UTF-8 Jinja file ({type(err).__name__})")
    if not text.strip():
        fail(key, v, "a Jinja chat-template file that is not empty")


def absolute_or_empty(key, v):
    if v and not Path(v).expanduser().is_absolute():
        fail(key, v, "an absolute path (or empty for the default)")


def judge(key, v):
    """One safety judge: a phrase rule, a judge model folder or a Hub id."""
    spec = v.strip()
    if spec.lower() in JUDGE_RULES:
        return
    path = Path(spec).expanduser()
    if spec and path.is_dir():
        if not (path / "config.json").is_file():
            fail(key, v, "a judge model folder containing config.json")
        return
    if not HUB_ID.match(spec):
        fail(key, v, f"{', '.join(map(repr, JUDGE_RULES))}, a judge model folder or a Hub id 'org/name'")


def judge_list(key, v):
    for spec in csv_tuple(v):
        judge(key, spec)


def reward_model(key, v):
    """'' (off), a Hub id, or a folder whose config.json is a one-output sequence classifier."""
    path = Path(v).expanduser()
    if not v or not path.exists() and HUB_ID.match(v):
        return
    if not (path / "config.json").is_file():
        fail(key, v, "'' (off), a Hub id 'org/name' or a reward model folder containing config.json")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    labels = len(config.get("id2label") or {}) or 2  # transformers' default: two labels
    if labels != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
        fail(key, v, f"a reward model: a sequence classifier with one output (found {archs} with {labels} labels)")


def questions(key, v):
    """'' (off), a Hub dataset id or folder, or a .jsonl/.json/.csv file of usable questions."""
    path = Path(v).expanduser()
    if not v or path.is_dir():
        return
    if path.suffix.lower() in DATA_SUFFIXES:
        if not path.is_file():
            fail(key, v, f"an existing file (not found: {path})")
        from fedsafe.eval.mtbench import load_questions

        try:  # reads the rows, loads no model
            load_questions(str(path))
        except ValueError as err:
            fail(key, v, f"a usable question column: {err}")
        return
    if not HUB_ID.match(v):
        fail(key, v, "'' (off), a .jsonl/.json/.csv file, a dataset folder or a Hub dataset id 'org/name'")
