"""Files derived from the settings declarations: the `[tool.flwr.app.config]` block of
pyproject.toml (Flower only lets `--run-config` override keys listed there) and
docs/configuration.md. A test fails when either is stale; regenerate both with

    python -m fedsafe.config.generate
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from fedsafe.config.parse import declared_keys

ROOT = Path(__file__).resolve().parents[2]
HEADER = "[tool.flwr.app.config]"
PARAMS_NOTE = "# Parameters of each registered aggregator (used when it is the one selected)."


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def aggregator_params() -> dict[str, Any]:
    """`defense.<name>.<param>` defaults, read from each registered rule's constructor."""
    from fedsafe.aggregators.registry import _REGISTRY

    params = {}
    for name, factory in _REGISTRY.items():
        for p in inspect.signature(factory).parameters.values():
            if p.default is not p.empty and isinstance(p.default, (bool, int, float, str)):
                params[f"defense.{name}.{p.name.replace('_', '-')}"] = p.default
    return params


def pyproject_block() -> str:
    lines = [HEADER, "# Generated from fedsafe/config/settings.py by `python -m fedsafe.config.generate`."]
    keys = list(declared_keys().items())
    for i, (key, spec) in enumerate(keys):
        lines.append(f"{key} = {_toml(spec.default)}")
        last_defense = key.startswith("defense.") and not (i + 1 < len(keys) and keys[i + 1][0].startswith("defense."))
        if last_defense:
            lines.append(PARAMS_NOTE)
            lines += [f"{k} = {_toml(v)}" for k, v in aggregator_params().items()]
    return "\n".join(lines) + "\n"


def _accepted(spec) -> str:
    options = getattr(spec.check, "options", None)
    if options:
        return ", ".join(f"`{_toml(o)}`" for o in options)
    return ""


def configuration_md() -> str:
    lines = ["# Configuration", "",
             "Every run-config key, generated from `fedsafe/config/settings.py` (`python -m "
             "fedsafe.config.generate`). Override with `flwr run . --run-config \"key=value ...\"` or a TOML "
             "file of keys (`presets/`). Bad values fail in one line before any model loads.", ""]
    section = None
    for key, spec in declared_keys().items():
        top = key.split(".")[0] if "." in key else "run"
        if top != section:
            section = top
            lines += ["", f"## {section}", "", "| key | type | default | help |", "|---|---|---|---|"]
        accepted = _accepted(spec)
        help_text = spec.help + (f" (one of {accepted})" if accepted else "")
        lines.append(f"| `{key}` | {spec.kind.__name__} | `{_toml(spec.default)}` | {help_text} |")
    lines += ["", "## aggregator parameters", "",
              "`defense.<aggregator>.<param>` reaches the chosen aggregator's constructor; the built-in defaults:",
              "", "| key | default |", "|---|---|"]
    lines += [f"| `{k}` | `{_toml(v)}` |" for k, v in aggregator_params().items()]
    return "\n".join(lines) + "\n"


def write_pyproject(path: Path = ROOT / "pyproject.toml") -> None:
    text = path.read_text(encoding="utf-8")
    start = text.index(HEADER)
    end = text.find("\n[", start + len(HEADER))
    rest = text[end + 1:] if end != -1 else ""
    path.write_text(text[:start] + pyproject_block() + ("\n" + rest if rest else ""), encoding="utf-8")


def current_block(path: Path = ROOT / "pyproject.toml") -> str:
    text = path.read_text(encoding="utf-8")
    start = text.index(HEADER)
    end = text.find("\n[", start + len(HEADER))
    return text[start:end + 1 if end != -1 else len(text)].rstrip("\n") + "\n"


def main() -> int:
    write_pyproject()
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "configuration.md").write_text(configuration_md(), encoding="utf-8")
    print("wrote pyproject.toml [tool.flwr.app.config] and docs/configuration.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
