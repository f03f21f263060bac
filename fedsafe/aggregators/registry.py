"""Aggregators by name: `register("name")` for built-ins, `package.module:attr` for outside code
(`defense.aggregator`), with their parameters from `defense.<name>.<param>`; the mechanism, and
its checks of names and parameters, is fedsafe/registry.py's, shared with the server optimizers.
"""

from __future__ import annotations

from fedsafe.registry import Registry

REGISTRY = Registry("aggregator", "multi-krum")


def register(name: str):
    """Class (or factory) decorator: make it available as `defense.aggregator = name`."""
    return REGISTRY.register(name)


def available() -> list[str]:
    return REGISTRY.available()


def get_aggregator(name: str, **params):
    """Build the aggregator `name` (registered name or `package.module:attr`) with `params`."""
    return REGISTRY.get(name, **params)
