"""Server optimizers by name (`fl.optimizer`), with their parameters from `fl.<name>.<param>`;
`package.module:attr` reaches a user's own. The mechanism is fedsafe/registry.py's, shared with
the aggregators: duplicate or malformed names fail at import, unknown parameters at build."""

from __future__ import annotations

from fedsafe.registry import Registry

REGISTRY = Registry("optimizer", "fedadam")


def register(name: str):
    """Class (or factory) decorator: make it available as `fl.optimizer = name`."""
    return REGISTRY.register(name)


def available() -> list[str]:
    return REGISTRY.available()


def get_optimizer(name: str, **params):
    """Build the server optimizer `name` (registered name or `package.module:attr`) with `params`."""
    return REGISTRY.get(name, **params)
