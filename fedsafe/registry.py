"""Plug-ins by name: `register("name")` for built-ins, `package.module:attr` for outside code.

One mechanism for every kind of plug-in (aggregators, server optimizers). Names are lowercase
kebab-case (the config surface is `<section>.<name>.<param>`); registering a name twice or a
malformed one fails at import time. Parameters arrive in snake_case and are checked against the
constructor's signature, so a typo in a run config is an error, not a silent default.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def plugin_name(plugin) -> str:
    """What error messages call a plug-in: its registered name, else its function or class name."""
    return getattr(plugin, "name", None) or getattr(plugin, "__name__", None) or type(plugin).__name__


class Registry:
    def __init__(self, kind: str, example: str):
        self.kind = kind  # "aggregator", "optimizer": the word every error message uses
        self.example = example  # a valid name, shown when a name is malformed
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str):
        """Class (or factory) decorator: make it available under `name`."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase kebab-case, e.g. {self.example!r}")
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is already registered (by {self.entries[name]!r})")

        def decorate(factory):
            self.entries[name] = factory
            if inspect.isclass(factory):
                factory.name = name  # used in error messages and results.json
            return factory

        return decorate

    def available(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str, **params):
        """Build `name` (registered name or `package.module:attr`) with `params`."""
        if name in self.entries:
            return self._build(name, self.entries[name], params)
        if isinstance(name, str) and _DOTTED.match(name):
            return self._resolve_dotted(name, params)
        raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())} "
                         f"or 'package.module:attr'")

    def _resolve_dotted(self, path: str, params: dict):
        module_name, attr = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"{self.kind} {path!r}: cannot import module {module_name!r} ({err})") from err
        obj = getattr(module, attr, None)
        if obj is None:
            raise ValueError(f"{self.kind} {path!r}: module {module_name!r} has no attribute {attr!r}")
        if not callable(obj):
            raise ValueError(f"{self.kind} {path!r} is not callable")
        if inspect.isclass(obj) or params:
            return self._build(path, obj, params)  # a class, or a factory given parameters
        return obj  # an already-built plug-in (function or instance)

    def _build(self, name: str, factory, params: dict):
        accepted = accepted_params(factory)
        if accepted is not None:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise ValueError(f"{self.kind} {name!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
                                 f"accepted: {', '.join(accepted) or '(none)'}")
        return factory(**params)


def accepted_params(factory) -> list[str] | None:
    """Keyword parameters of the constructor/factory; None if it takes **kwargs."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return names
