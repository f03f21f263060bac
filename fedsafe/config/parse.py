"""From Flower's flat run config to the frozen settings tree, validated once.

The keys are the declared fields of `Settings` (`declared_keys`); `defense.<aggregator>.<param>`
keys reach the chosen aggregator's constructor. Cross-field checks and derived values (the
malicious ids, the post-hoc rate by level, the list of judges) live here. Every error is one line
naming the key, raised before any model loads.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any, Callable

from fedsafe.config.fields import JUDGE_RULES, ConfigError, fail
from fedsafe.config.settings import POSTHOC_LR, Settings


@dataclass(frozen=True)
class Key:
    """One run-config key as declared: its flat type, default, check and help."""

    kind: type
    default: Any
    check: Callable[[str, Any], None] | None
    help: str
    parse: Callable[[Any], Any] | None
    path: tuple[str, ...]  # attribute path in Settings


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _walk(cls, prefix: str, path: tuple[str, ...]):
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            yield from _walk(kind, f"{prefix}{_kebab(f.name)}.", path + (f.name,))
        elif "help" in f.metadata:
            meta = f.metadata
            yield f"{prefix}{_kebab(f.name)}", Key(type(meta["default"]), meta["default"], meta["check"],
                                                  meta["help"], meta["parse"], path + (f.name,))


@cache
def declared_keys() -> dict[str, Key]:
    """Every run-config key, in declaration order."""
    return dict(_walk(Settings, "", ()))


def defaults() -> dict[str, Any]:
    return {k: spec.default for k, spec in declared_keys().items()}


def _coerce(key: str, spec: Key, value: Any) -> Any:
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not spec.kind:
        fail(key, value, f"a {spec.kind.__name__}")
    if spec.check is not None:
        spec.check(key, value)
    return value


def _build(cls, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = ()):
    """Instantiate `cls` and its sections from parsed values keyed by attribute path."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values, path + (f.name,))
        elif path + (f.name,) in values:
            kwargs[f.name] = values[path + (f.name,)]
    return cls(**kwargs)


PLUGIN_SECTIONS = ("defense.", "fl.")  # defense.<aggregator>.<param>, fl.<optimizer>.<param>


def _plugin_params(flat: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`<section>.<name>.<param>` keys of the chosen plug-in (prefix `<section>.<name>.`), as
    constructor kwargs; declared keys (e.g. fl.fedprox.mu) are not a plug-in's."""
    keys = declared_keys()
    return {k[len(prefix):].replace("-", "_"): v for k, v in flat.items() if k.startswith(prefix) and k not in keys}


def _malicious_ids(flat: dict[str, Any], num_clients: int) -> tuple[int, ...]:
    explicit = flat["attack.malicious-ids"]
    if explicit:
        ids = declared_keys()["attack.malicious-ids"].parse(explicit)
        if any(i >= num_clients for i in ids):
            fail("attack.malicious-ids", explicit, f"ids in 0..{num_clients - 1} (clients.num={num_clients})")
        return ids
    n = flat["attack.num-malicious"]
    if n > num_clients:
        fail("attack.num-malicious", n, f"at most clients.num={num_clients}")
    return tuple(range(num_clients - n, num_clients))


def all_judges(primary: str, more: tuple[str, ...]) -> tuple[str, ...]:
    """eval.judge, then each other judge of eval.judges once, in the given order."""
    specs = [s.strip() for s in (primary, *more) if s.strip()]
    return tuple(dict.fromkeys(s.lower() if s.lower() in JUDGE_RULES else s for s in specs))


def _cross_checks(flat: dict[str, Any]) -> None:
    if flat["clients.per-round"] > flat["clients.num"]:
        fail("clients.per-round", flat["clients.per-round"], f"at most clients.num={flat['clients.num']}")
    if flat["clients.per-round"] + flat["clients.reserve"] > flat["clients.num"]:
        fail("clients.reserve", flat["clients.reserve"],
             f"at most clients.num - clients.per-round = {flat['clients.num'] - flat['clients.per-round']}")
    if flat["eval.mt1.questions"] and not (flat["eval.helpfulness.url"] and flat["eval.helpfulness.model"]):
        fail("eval.mt1.questions", flat["eval.mt1.questions"], "a grader as well: set eval.helpfulness.url "
             "and eval.helpfulness.model")
    if flat["train.lr-min"] > flat["train.lr-max"]:
        fail("train.lr-min", flat["train.lr-min"], f"at most train.lr-max={flat['train.lr-max']}")
    if flat["fl.client-algorithm"] == "scaffold" and flat["defense.dp.noise-multiplier"] > 0:
        fail("fl.client-algorithm", "scaffold", "'none' or 'fedprox' with defense.dp.noise-multiplier > 0 (Flower's "
             "DP wrapper clips every array a client returns, control variates included)")


def _check_optimizer(optimizer: str, params: dict[str, Any]) -> None:
    from fedsafe.optimizers import get_optimizer  # light import: pure tensor code

    try:
        get_optimizer(optimizer, **params)
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise ConfigError(f"fl.optimizer={optimizer!r}: {err}") from None


def _check_aggregator(flat: dict[str, Any], aggregator: str, params: dict[str, Any]) -> None:
    from fedsafe.aggregators import get_aggregator  # light import: no model libraries

    try:
        agg = get_aggregator(aggregator, **params)
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise ConfigError(f"defense.aggregator={aggregator!r}: {err}") from None
    needs = getattr(agg, "min_clients", 0)
    if needs > flat["clients.per-round"]:  # else round 1 fails, after every model has loaded
        fail("clients.per-round", flat["clients.per-round"], f"at least {needs} for defense.aggregator="
             f"{aggregator!r} with these parameters")
    _refuse_degenerate(agg, aggregator, flat)


def _refuse_degenerate(agg, aggregator: str, flat: dict[str, Any]) -> None:
    """A rule whose setting makes it a plain average with a full round's updates (the sampled
    clients, plus the reserves for a rule taking them) is refused, naming the key to change."""
    check = getattr(agg, "degenerate", None)
    if check is None:
        return
    n = flat["clients.per-round"] + (flat["clients.reserve"] if getattr(agg, "takes_reserves", False) else 0)
    found = check(n)
    if found is None:
        return
    if found.param is None:
        raise ConfigError(f"clients.per-round={flat['clients.per-round']}: {found.why} "
                          f"(defense.aggregator={aggregator!r})")
    raise ConfigError(f"defense.{aggregator}.{found.param.replace('_', '-')}={found.value!r}: {found.why}")


def from_run_config(run_config: dict[str, Any], *, check_aggregator: bool = True) -> Settings:
    """Parse and validate a flat Flower run config (missing keys take their defaults)."""
    keys = declared_keys()
    unknown = [k for k in run_config if k not in keys and not (k.startswith(PLUGIN_SECTIONS) and k.count(".") == 2)]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; docs/configuration.md lists the accepted keys")
    flat = {k: _coerce(k, spec, run_config.get(k, spec.default)) for k, spec in keys.items()}
    flat.update({k: v for k, v in run_config.items() if k not in keys})
    _cross_checks(flat)
    aggregator, optimizer = flat["defense.aggregator"], flat["fl.optimizer"]
    params = _plugin_params(flat, f"defense.{aggregator}.")
    optimizer_params = _plugin_params(flat, f"fl.{optimizer}.")
    if check_aggregator:
        _check_aggregator(flat, aggregator, params)
        _check_optimizer(optimizer, optimizer_params)

    values = {spec.path: spec.parse(flat[k]) if spec.parse else flat[k] for k, spec in keys.items()}
    values[("attack", "malicious_ids")] = _malicious_ids(flat, flat["clients.num"])
    values[("posthoc", "lr")] = flat["posthoc.lr"] or POSTHOC_LR[flat["posthoc.level"]]
    judges = all_judges(flat["eval.judge"], values[("eval", "judges")])
    values[("eval", "judge")], values[("eval", "judges")] = judges[0], judges
    settings = _build(Settings, values)
    return dataclasses.replace(settings, defense=dataclasses.replace(settings.defense, params=params),
                               fl=dataclasses.replace(settings.fl, optimizer_params=optimizer_params), flat=flat)
