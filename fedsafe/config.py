"""One frozen settings tree, parsed once from Flower's flat run config and validated once.

Every key is declared exactly once in `KEYS` (type, default, check). `pyproject.toml` repeats
the defaults because Flower only lets `--run-config` override keys it lists; a test keeps the two
equal. Errors are one line naming the key, the value and what is accepted, and are raised before
any model is loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BUNDLED_MODEL = "smollm2-135m-instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
LEVELS = ("L1", "L2", "L3")
# Post-hoc learning rate per level when posthoc.lr = 0, for 10 steps of balanced batches.
# SmolLM2-135M, L1, 3 seeds: 5e-4 made the model refuse 25-40 % of held-out benign prompts
# (3-5 % before), 2e-4 10-18 %. Model-written defense data (L2/L3) is low-entropy text (mean
# training loss 0.8 against 2.7 for L1), so it takes a lower rate: 1e-4 (L3, seed 0: 5 % refused;
# 2e-4: 27 %). L2 shares L3's rate by the same reasoning, unmeasured here.
POSTHOC_LR = {"L1": 2e-4, "L2": 1e-4, "L3": 1e-4}
UPDATE_ATTACKS = ("none", "scale", "sign-flip", "gaussian", "stealthy-norm", "probe-aware", "probe-aware-cover")
BENCHMARKS = ("bundled", "advbench", "harmbench", "jbb")
PROBE_PROMPTS = 30  # lines in each of the bundled harmful_probe / helpful_probe files


class ConfigError(ValueError):
    """A run-config value that fedsafe cannot use; the message is one line."""


@dataclass(frozen=True)
class Key:
    kind: type
    default: Any
    check: Callable[[str, Any], None] | None = None
    help: str = ""


def _fail(key: str, value: Any, accepted: str) -> None:
    raise ConfigError(f"{key}={value!r}: expected {accepted}")


def _positive(key, v):
    if v <= 0:
        _fail(key, v, "a number > 0")


def _non_negative(key, v):
    if v < 0:
        _fail(key, v, "a number >= 0")


def _unit(key, v):
    if not 0.0 <= v <= 1.0:
        _fail(key, v, "a number in [0, 1]")


def _probe_prompts(key, v):
    if not 1 <= v <= PROBE_PROMPTS:
        _fail(key, v, f"an integer in [1, {PROBE_PROMPTS}] (the bundled probe prompts)")


def _choice(*options):
    def check(key, v):
        if v not in options:
            _fail(key, v, "one of " + ", ".join(repr(o) for o in options))

    return check


def _model_source(key, v):
    if v == BUNDLED_MODEL or v == "base" and key != "model.name":
        return
    if Path(v).expanduser().is_dir():
        if not (Path(v).expanduser() / "config.json").is_file():
            _fail(key, v, "a model folder containing config.json")
        return
    if not HUB_ID.match(v):
        extra = "'base', " if key != "model.name" else ""
        _fail(key, v, f"{extra}'{BUNDLED_MODEL}', a local model folder, or a Hub id 'org/name'")


def _data_source(*words):
    def check(key, v):
        if v in words:
            return
        p = Path(v).expanduser()
        if p.is_dir():  # a local dataset folder, read by datasets.load_dataset like a Hub id
            return
        if p.suffix.lower() in DATA_SUFFIXES:
            if not p.is_file():
                _fail(key, v, f"an existing file (not found: {p})")
            return
        if not HUB_ID.match(v):
            accepted = ", ".join(repr(w) for w in words)
            _fail(key, v, f"{accepted}, a .jsonl/.json/.csv file, a dataset folder, or a Hub dataset id 'org/name'")

    return check


def _id_list(key, v):
    if v and not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", v):
        _fail(key, v, "comma-separated partition ids such as '7,8,9' (or empty)")


def _module_list(key, v):
    if not [m for m in v.split(",") if m.strip()]:
        _fail(key, v, "comma-separated module names such as 'q_proj,v_proj'")


def _absolute_or_empty(key, v):
    if v and not Path(v).expanduser().is_absolute():
        _fail(key, v, "an absolute path (or empty for the default)")


# Run-config keys: (type, default, check). Kebab-case, dotted by section.
KEYS: dict[str, Key] = {
    "num-server-rounds": Key(int, 7, _positive, "federated rounds"),
    "seed": Key(int, 0, _non_negative, "seeds sampling, init, data order, generation"),
    "output-dir": Key(str, "", _absolute_or_empty, "runs go here; empty: ~/.fedsafe/runs"),
    "resume-from": Key(str, "", None, "a run directory to continue"),
    "model.name": Key(str, BUNDLED_MODEL, _model_source, "bundled default, Hub id or folder"),
    "model.quantization": Key(int, 4, _choice(0, 4, 8), "4 = NF4 + double quant, 8, 0 = none"),
    "model.trust-remote-code": Key(bool, False, None, "passed to from_pretrained"),
    "model.gradient-checkpointing": Key(bool, False, None, "trade compute for memory"),
    "model.server-dense": Key(bool, True, None, "the server runs 4-bit weights dequantized once (CPU only): "
                              "the same numbers, faster, a dense model's memory; clients stay 4-bit"),
    "model.lora.r": Key(int, 16, _positive),
    "model.lora.alpha": Key(int, 32, _positive),
    "model.lora.dropout": Key(float, 0.05, _unit),
    "model.lora.target-modules": Key(str, "q_proj,k_proj,v_proj,o_proj", _module_list),
    "train.local-steps": Key(int, 8, _positive, "optimizer steps per client per round"),
    "train.batch-size": Key(int, 4, _positive),
    "train.seq-length": Key(int, 160, _positive, "tokens; longer samples are truncated"),
    "train.lr-max": Key(float, 1e-3, _positive, "cosine decay over rounds, as in the paper"),
    "train.lr-min": Key(float, 1e-4, _non_negative),
    "clients.num": Key(int, 10, _positive, "partitions = SuperNodes"),
    "clients.per-round": Key(int, 4, _positive, "sampled each round, seeded"),
    "clients.timeout": Key(float, 1800.0, _positive, "seconds to wait for nodes and replies"),
    "clients.sampling": Key(str, "paired", _choice("paired", "stratified", "uniform"),
                            "paired/stratified: each round's malicious share matches the federation's; "
                            "paired: otherwise the no-attack run's clients"),
    "clients.reserve": Key(int, 0, _non_negative,
                           "extra clients trained each round, standing in (in draw order) for sampled ones that "
                           "fail or that a rule taking reserves (safety-probe) excludes"),
    "data.benign": Key(str, "bundled", _data_source("bundled")),
    "data.aligned-pairs": Key(int, 60, _non_negative, "bundled refusal pairs added to the benign pool"),
    "data.instruction-column": Key(str, "instruction", None, "column mapping for files/Hub"),
    "data.response-column": Key(str, "response", None),
    "attack.num-malicious": Key(int, 3, _non_negative, "the last N partitions are malicious"),
    "attack.malicious-ids": Key(str, "", _id_list, "explicit ids; overrides num-malicious"),
    "attack.data": Key(str, "generated", _data_source("generated")),
    "attack.generator": Key(str, "base", _model_source, "'base' = the experiment's model"),
    "attack.instructions": Key(str, "generated", _data_source("generated", "bundled")),
    "attack.num-samples": Key(int, 96, _positive, "generation attempts"),
    "attack.benign-mix": Key(float, 0.0, _unit, "share of benign samples for stealth"),
    "attack.update": Key(str, "none", _choice(*UPDATE_ATTACKS), "model poisoning on the delta"),
    "attack.update-factor": Key(float, 10.0, _positive, "scale for 'scale'/'sign-flip', std for 'gaussian'"),
    "attack.probe-tolerance": Key(float, 0.1, _non_negative,
                                  "'probe-aware': margin drop its own probe may show; safety-probe's default"),
    "defense.aggregator": Key(str, "fedavg", None, "registered name or 'package.module:attr'"),
    "defense.dp.noise-multiplier": Key(float, 0.0, _non_negative, "0 = no DP"),
    "defense.dp.clipping-norm": Key(float, 1.0, _positive),
    "posthoc.enabled": Key(bool, True),
    "posthoc.level": Key(str, "L1", _choice(*LEVELS)),
    "posthoc.generator": Key(str, "base", _model_source, "aligned model for L2"),
    "posthoc.steps": Key(int, 10, _positive),
    "posthoc.lr": Key(float, 0.0, _non_negative, "0 = by level: L1 2e-4, L2/L3 1e-4"),
    "posthoc.batch-size": Key(int, 4, _positive),
    "posthoc.num-samples": Key(int, 40, _positive, "aligned pairs; as many helpful pairs"),
    "posthoc.borderline-share": Key(float, 0.0, _unit, "share of the helpful half drawn from borderline "
                                    "benign pairs (edgy-sounding requests)"),
    "posthoc.select-every": Key(int, 0, _non_negative, "check the probe prompts every N steps and keep the "
                                "best adapter; 0 = keep the last"),
    "posthoc.select-size": Key(int, 20, _probe_prompts, "harmful and as many benign probe prompts"),
    "eval.safety.benchmark": Key(str, "bundled", _data_source(*BENCHMARKS)),
    "eval.safety.limit": Key(int, 0, _non_negative, "0 = all prompts"),
    "eval.benign.limit": Key(int, 0, _non_negative, "0 = all held-out benign prompts"),
    "eval.initial": Key(bool, True, None, "evaluate the base model first (the same in every run of "
                        "one model: a sweep does it once)"),
    "eval.initial-cache": Key(bool, True, None, "reuse the initial evaluation from the fedsafe cache, keyed by "
                              "model, prompts, generation settings, judge and code"),
    "eval.every-rounds": Key(int, 0, _non_negative, "safety probe cadence; 0 = off"),
    "eval.probe-size": Key(int, 20, _positive),
    "eval.judge": Key(str, "rule", None, "'rule' or a judge model id/folder"),
    "eval.max-new-tokens": Key(int, 40, _positive),
    "eval.batch-size": Key(int, 32, _positive),
    "eval.helpfulness.url": Key(str, "", None, "OpenAI-compatible endpoint; empty = off"),
    "eval.helpfulness.model": Key(str, ""),
    "eval.helpfulness.api-key-env": Key(str, "OPENAI_API_KEY"),
}


def _snake(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class ModelSettings:
    name: str
    quantization: int
    trust_remote_code: bool
    gradient_checkpointing: bool
    lora: LoraSettings
    server_dense: bool = True


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int
    batch_size: int
    seq_length: int
    lr_max: float
    lr_min: float

    def lr(self, server_round: int, num_rounds: int) -> float:
        """Cosine decay from lr-max (round 1) towards lr-min, as in OpenFedLLM / the paper."""
        progress = (server_round - 1) / max(num_rounds, 1)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ClientSettings:
    num: int
    per_round: int
    timeout: float
    sampling: str
    reserve: int


@dataclass(frozen=True)
class DataSettings:
    benign: str
    aligned_pairs: int
    instruction_column: str
    response_column: str


@dataclass(frozen=True)
class AttackSettings:
    malicious_ids: tuple[int, ...]
    data: str
    generator: str
    instructions: str
    num_samples: int
    benign_mix: float
    update: str
    update_factor: float
    probe_tolerance: float


@dataclass(frozen=True)
class DefenseSettings:
    aggregator: str
    params: dict[str, Any] = field(hash=False)  # snake_case constructor params for the aggregator
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0


@dataclass(frozen=True)
class PosthocSettings:
    enabled: bool
    level: str
    generator: str
    steps: int
    lr: float
    batch_size: int
    num_samples: int
    borderline_share: float
    select_every: int
    select_size: int


@dataclass(frozen=True)
class EvalSettings:
    benchmark: str
    safety_limit: int
    benign_limit: int
    initial: bool
    every_rounds: int
    probe_size: int
    judge: str
    max_new_tokens: int
    batch_size: int
    helpfulness_url: str
    helpfulness_model: str
    helpfulness_api_key_env: str
    initial_cache: bool = True


@dataclass(frozen=True)
class Settings:
    num_server_rounds: int
    seed: int
    output_dir: str
    resume_from: str
    model: ModelSettings
    train: TrainSettings
    clients: ClientSettings
    data: DataSettings
    attack: AttackSettings
    defense: DefenseSettings
    posthoc: PosthocSettings
    eval: EvalSettings
    flat: dict[str, Any] = field(hash=False, compare=False)  # the resolved run config

    def is_malicious(self, partition_id: int) -> bool:
        return partition_id in self.attack.malicious_ids


def _coerce(key: str, spec: Key, value: Any) -> Any:
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if spec.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not spec.kind:
        _fail(key, value, f"a {spec.kind.__name__}")
    if spec.check is not None:
        spec.check(key, value)
    return value


def _aggregator_params(flat: dict[str, Any], aggregator: str) -> dict[str, Any]:
    """`defense.<name>.<param>` keys for the chosen aggregator, as constructor kwargs."""
    prefix = f"defense.{aggregator}."
    return {_snake(k[len(prefix):]): v for k, v in flat.items() if k.startswith(prefix)}


def _malicious_ids(flat: dict[str, Any], num_clients: int) -> tuple[int, ...]:
    explicit = flat["attack.malicious-ids"]
    if explicit:
        ids = tuple(sorted({int(x) for x in explicit.split(",")}))
        bad = [i for i in ids if i >= num_clients]
        if bad:
            _fail("attack.malicious-ids", explicit, f"ids in 0..{num_clients - 1} (clients.num={num_clients})")
        return ids
    n = flat["attack.num-malicious"]
    if n > num_clients:
        _fail("attack.num-malicious", n, f"at most clients.num={num_clients}")
    return tuple(range(num_clients - n, num_clients))


def from_run_config(run_config: dict[str, Any], *, check_aggregator: bool = True) -> Settings:
    """Parse and validate a flat Flower run config (missing keys take their defaults)."""
    aggregator = str(run_config.get("defense.aggregator", KEYS["defense.aggregator"].default))
    unknown = [
        k for k in run_config
        if k not in KEYS and not (k.startswith("defense.") and k.count(".") == 2)
    ]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key; see fedsafe/config.py for the accepted keys")
    flat = {k: _coerce(k, spec, run_config.get(k, spec.default)) for k, spec in KEYS.items()}
    flat.update({k: v for k, v in run_config.items() if k not in KEYS})

    if flat["clients.per-round"] > flat["clients.num"]:
        _fail("clients.per-round", flat["clients.per-round"], f"at most clients.num={flat['clients.num']}")
    if flat["clients.per-round"] + flat["clients.reserve"] > flat["clients.num"]:
        _fail("clients.reserve", flat["clients.reserve"],
              f"at most clients.num - clients.per-round = {flat['clients.num'] - flat['clients.per-round']}")
    if flat["train.lr-min"] > flat["train.lr-max"]:
        _fail("train.lr-min", flat["train.lr-min"], f"at most train.lr-max={flat['train.lr-max']}")
    params = _aggregator_params(flat, aggregator)
    if check_aggregator:
        from fedsafe.aggregators import get_aggregator  # light import: no model libraries

        try:
            needs = getattr(get_aggregator(aggregator, **params), "min_clients", 0)
        except (ValueError, TypeError, ImportError, AttributeError) as err:
            raise ConfigError(f"defense.aggregator={aggregator!r}: {err}") from None
        if needs > flat["clients.per-round"]:  # else round 1 fails, after every model has loaded
            _fail("clients.per-round", flat["clients.per-round"], f"at least {needs} for defense.aggregator="
                  f"{aggregator!r} with these parameters")

    lora = LoraSettings(
        r=flat["model.lora.r"], alpha=flat["model.lora.alpha"], dropout=flat["model.lora.dropout"],
        target_modules=tuple(m.strip() for m in flat["model.lora.target-modules"].split(",") if m.strip()),
    )
    return Settings(
        num_server_rounds=flat["num-server-rounds"],
        seed=flat["seed"],
        output_dir=flat["output-dir"],
        resume_from=flat["resume-from"],
        model=ModelSettings(
            name=flat["model.name"], quantization=flat["model.quantization"],
            trust_remote_code=flat["model.trust-remote-code"],
            gradient_checkpointing=flat["model.gradient-checkpointing"], lora=lora,
            server_dense=flat["model.server-dense"],
        ),
        train=TrainSettings(**_section(flat, "train.")),
        clients=ClientSettings(**_section(flat, "clients.")),
        data=DataSettings(**_section(flat, "data.")),
        attack=AttackSettings(
            malicious_ids=_malicious_ids(flat, flat["clients.num"]),
            **{k: v for k, v in _section(flat, "attack.").items() if k not in ("num_malicious", "malicious_ids")},
        ),
        defense=DefenseSettings(
            aggregator=aggregator, params=params,
            dp_noise_multiplier=flat["defense.dp.noise-multiplier"],
            dp_clipping_norm=flat["defense.dp.clipping-norm"],
        ),
        posthoc=PosthocSettings(**{**_section(flat, "posthoc."),
                                   "lr": flat["posthoc.lr"] or POSTHOC_LR[flat["posthoc.level"]]}),
        eval=EvalSettings(
            benchmark=flat["eval.safety.benchmark"], safety_limit=flat["eval.safety.limit"],
            benign_limit=flat["eval.benign.limit"], initial=flat["eval.initial"],
            every_rounds=flat["eval.every-rounds"], probe_size=flat["eval.probe-size"], judge=flat["eval.judge"],
            max_new_tokens=flat["eval.max-new-tokens"], batch_size=flat["eval.batch-size"],
            helpfulness_url=flat["eval.helpfulness.url"], helpfulness_model=flat["eval.helpfulness.model"],
            helpfulness_api_key_env=flat["eval.helpfulness.api-key-env"], initial_cache=flat["eval.initial-cache"],
        ),
        flat=flat,
    )


def _section(flat: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Keys of one flat section (no deeper dots) as snake_case kwargs."""
    return {
        _snake(k[len(prefix):]): v for k, v in flat.items()
        if k.startswith(prefix) and "." not in k[len(prefix):] and k in KEYS
    }


def defaults() -> dict[str, Any]:
    return {k: spec.default for k, spec in KEYS.items()}


def as_dict(settings: Settings) -> dict[str, Any]:
    """The resolved config as written to config.json (flat keys, as given to --run-config)."""
    return dict(settings.flat)
