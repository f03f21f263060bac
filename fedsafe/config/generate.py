"""Files derived from the settings declarations: the `[tool.flwr.app.config]` block of
pyproject.toml (Flower only lets `--run-config` override keys listed there) and
docs/configuration.md. A test fails when either is stale; regenerate both with

    python -m fedsafe.config.generate
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from fedsafe.config.parse import declared_keys
from fedsafe.files import toml_value

ROOT = Path(__file__).resolve().parents[2]
HEADER = "[tool.flwr.app.config]"
PARAMS_NOTE = {"defense": "# Parameters of each registered aggregator (used when it is the one selected).",
               "fl": "# Parameters of each registered server optimizer (used when it is the one selected)."}


def _constructor_defaults(section: str, entries: dict) -> dict[str, Any]:
    params = {}
    for name, factory in entries.items():
        for p in inspect.signature(factory).parameters.values():
            if p.default is not p.empty and isinstance(p.default, (bool, int, float, str)):
                params[f"{section}.{name}.{p.name.replace('_', '-')}"] = p.default
    return params


def aggregator_params() -> dict[str, Any]:
    """`defense.<name>.<param>` defaults, read from each registered rule's constructor."""
    from fedsafe.aggregators.registry import REGISTRY

    return _constructor_defaults("defense", REGISTRY.entries)


def optimizer_params() -> dict[str, Any]:
    """`fl.<name>.<param>` defaults, read from each registered server optimizer's constructor."""
    from fedsafe.optimizers.registry import REGISTRY

    return _constructor_defaults("fl", REGISTRY.entries)


def pyproject_block() -> str:
    lines = [HEADER, "# Generated from fedsafe/config/settings.py by `python -m fedsafe.config.generate`."]
    plugins = {"defense": aggregator_params(), "fl": optimizer_params()}
    keys = list(declared_keys())
    for i, key in enumerate(keys):
        lines.append(f"{key} = {toml_value(declared_keys()[key].default)}")
        section = key.split(".")[0]
        if section in plugins and (i + 1 == len(keys) or keys[i + 1].split(".")[0] != section):
            lines.append(PARAMS_NOTE[section])  # after the section's last declared key
            lines += [f"{k} = {toml_value(v)}" for k, v in plugins[section].items()]
    return "\n".join(lines) + "\n"


def _accepted(spec) -> str:
    options = getattr(spec.check, "options", None)
    if options:
        return ", ".join(f"`{toml_value(o)}`" for o in options)
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
        lines.append(f"| `{key}` | {spec.kind.__name__} | `{toml_value(spec.default)}` | {help_text} |")
    for title, what, params in (("aggregator parameters", "`defense.<aggregator>.<param>` reaches the chosen "
                                 "aggregator's constructor", aggregator_params()),
                                ("server optimizer parameters", "`fl.<optimizer>.<param>` reaches the chosen server "
                                 "optimizer's constructor", optimizer_params())):
        lines += ["", f"## {title}", "", f"{what}; the built-in defaults:", "", "| key | default |", "|---|---|"]
        lines += [f"| `{k}` | `{toml_value(v)}` |" for k, v in params.items()]
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
