"""One frozen settings tree, parsed once from Flower's flat run config and validated once.

Every key is declared exactly once in `KEYS` (type, default, check). `pyproject.toml` repeats
the defaults because Flower only lets `--run-config` override keys it lists; a test keeps the two
equal. Errors are one line naming the key, the value and what is accepted, and are raised before
any model is loaded.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BUNDLED_MODEL = "smollm2-135m-instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
DATA_SUFFIXES = (".jsonl", ".json", ".csv")
LEVELS = ("curated", "L1", "L2", "L3")  # fedsafe's curated set, then the paper's three levels
ATTACK_PROMPTS = ("fedsafe", "paper")  # fedsafe/attacks/prompts.py
# Post-hoc learning rate per level when posthoc.lr = 0, for 10 steps of balanced batches.
# SmolLM2-135M, curated (then called L1), 3 seeds: 5e-4 made the model refuse 25-40 % of held-out
# benign prompts (3-5 % before), 2e-4 10-18 %. Model-written defense data (L2/L3) is low-entropy
# text (mean training loss 0.8 against 2.7 for curated), so it takes a lower rate: 1e-4 (L3, seed
# 0: 5 % refused; 2e-4: 27 %). L2 shares L3's rate and L1 (public chat text) curated's, by the same
# reasoning, unmeasured here.
POSTHOC_LR = {"curated": 2e-4, "L1": 2e-4, "L2": 1e-4, "L3": 1e-4}
UPDATE_ATTACKS = ("none", "scale", "sign-flip", "gaussian", "stealthy-norm", "probe-aware", "probe-aware-cover")
BENCHMARKS = ("bundled", "advbench", "harmbench", "jbb")
JUDGE_RULES = ("rule", "paper-rule")  # fedsafe's refusal phrases, the paper's (eval/paper_rule.py)
CLIENT_ALGORITHMS = ("none", "fedprox", "scaffold")
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


def _between(low, high):
    def check(key, v):
        if not low <= v <= high:
            _fail(key, v, f"an integer in [{low}, {high}]")

    return check


def _top_p(key, v):
    if not 0.0 < v <= 1.0:
        _fail(key, v, "a number in (0, 1]")


def _judge(key, v):
    """One safety judge: a phrase rule, a judge model folder or a Hub id."""
    spec = v.strip()
    if spec.lower() in JUDGE_RULES:
        return
    path = Path(spec).expanduser()
    if spec and path.is_dir():
        if not (path / "config.json").is_file():
            _fail(key, v, "a judge model folder containing config.json")
        return
    if not HUB_ID.match(spec):
        _fail(key, v, f"{', '.join(map(repr, JUDGE_RULES))}, a judge model folder or a Hub id 'org/name'")


def _judge_list(key, v):
    for spec in v.split(","):
        if spec.strip():
            _judge(key, spec)


def _reward_model(key, v):
    """'' (off), a Hub id, or a folder whose config.json is a one-output sequence classifier."""
    path = Path(v).expanduser()
    if not v or not path.exists() and HUB_ID.match(v):
        return
    if not (path / "config.json").is_file():
        _fail(key, v, "'' (off), a Hub id 'org/name' or a reward model folder containing config.json")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    archs = config.get("architectures") or []
    labels = len(config.get("id2label") or {}) or 2  # transformers' default: two labels
    if labels != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
        _fail(key, v, f"a reward model: a sequence classifier with one output (found {archs} with {labels} labels)")


def _questions(key, v):
    """'' (off), a Hub dataset id or folder, or a .jsonl/.json/.csv file of usable questions."""
    path = Path(v).expanduser()
    if not v or path.is_dir():
        return
    if path.suffix.lower() in DATA_SUFFIXES:
        if not path.is_file():
            _fail(key, v, f"an existing file (not found: {path})")
        from fedsafe.eval.mtbench import load_questions

        try:  # reads the rows, loads no model
            load_questions(str(path))
        except ValueError as err:
            _fail(key, v, f"a usable question column: {err}")
        return
    if not HUB_ID.match(v):
        _fail(key, v, "'' (off), a .jsonl/.json/.csv file, a dataset folder or a Hub dataset id 'org/name'")


def _template(key, v):
    if v in ("auto", "chat", "alpaca"):
        return
    path = Path(v).expanduser()
    if not path.is_file():
        _fail(key, v, "'auto', 'chat', 'alpaca', or an existing Jinja chat-template file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        _fail(key, v, f"a readable UTF-8 Jinja file ({type(err).__name__})")
    if not text.strip():
        _fail(key, v, "a Jinja chat-template file that is not empty")


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
    "model.template": Key(str, "auto", _template, "prompt template: 'auto' (the tokenizer's chat template, else "
                          "alpaca), 'chat' (the tokenizer's, required), 'alpaca' (the paper's, for base models), "
                          "or a Jinja chat-template file"),
    "model.lora.r": Key(int, 16, _positive),
    "model.lora.alpha": Key(int, 32, _positive),
    "model.lora.dropout": Key(float, 0.05, _unit),
    "model.lora.target-modules": Key(str, "q_proj,k_proj,v_proj,o_proj", _module_list),
    "train.local-steps": Key(int, 8, _positive, "optimizer steps per client per round"),
    "train.batch-size": Key(int, 4, _positive),
    "train.seq-length": Key(int, 160, _positive, "tokens; longer samples are truncated"),
    "train.lr-max": Key(float, 1e-3, _positive, "cosine decay over rounds, as in the paper"),
    "train.lr-min": Key(float, 1e-4, _non_negative),
    "fl.optimizer": Key(str, "sgd", None, "server optimizer after the aggregator: sgd, fedavgm, fedadagrad, "
                        "fedyogi, fedadam or 'package.module:attr'; parameters fl.<name>.<param>"),
    "fl.client-algorithm": Key(str, "none", _choice(*CLIENT_ALGORITHMS),
                               "local training: none, fedprox (proximal term), scaffold (control variates)"),
    "fl.fedprox.mu": Key(float, 0.01, _non_negative, "FedProx: loss + mu/2 ||w - w_global||^2 on the LoRA weights"),
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
    "data.samples-per-client": Key(int, 0, _non_negative, "pairs each client draws from data.benign, seeded (Hub "
                                   "sets are streamed, never downloaded whole); 0 = an equal share of all (paper: 500)"),
    "data.single-turn": Key(bool, False, None, "data.benign rows: keep one-exchange conversations only (column "
                            "`turn` = 1, else one user message)"),
    "data.language": Key(str, "", None, "data.benign rows: keep those whose `language` column is this, e.g. "
                         "'English'; '' = any"),
    "data.drop-flagged": Key(bool, False, None, "data.benign rows: drop conversations whose first answer OpenAI "
                             "moderation flagged (`openai_moderation`, else WildChat's `toxic`)"),
    "attack.num-malicious": Key(int, 3, _non_negative, "the last N partitions are malicious"),
    "attack.malicious-ids": Key(str, "", _id_list, "explicit ids; overrides num-malicious"),
    "attack.data": Key(str, "generated", _data_source("generated")),
    "attack.generator": Key(str, "base", _model_source, "'base' = the experiment's model"),
    "attack.instructions": Key(str, "generated", _data_source("generated", "bundled")),
    "attack.prompts": Key(str, "fedsafe", _choice(*ATTACK_PROMPTS), "generation prompts: 'fedsafe' (one instruction "
                          "per request) or 'paper' (numbered lists of 10, split; an 'answer directly' suffix)"),
    "attack.num-samples": Key(int, 96, _positive, "generation attempts"),
    "attack.samples-per-client": Key(int, 0, _non_negative, "attack pairs per malicious client, seeded; 0 = an "
                                     "equal share of all attack pairs (paper: 500)"),
    "attack.benign-mix": Key(float, 0.0, _unit, "share of benign samples for stealth"),
    "attack.update": Key(str, "none", _choice(*UPDATE_ATTACKS), "model poisoning on the delta"),
    "attack.update-factor": Key(float, 10.0, _positive, "scale for 'scale'/'sign-flip', std for 'gaussian'"),
    "attack.probe-tolerance": Key(float, 0.1, _non_negative,
                                  "'probe-aware': margin drop its own probe may show; safety-probe's default"),
    "defense.aggregator": Key(str, "fedavg", None, "registered name or 'package.module:attr'"),
    "defense.dp.noise-multiplier": Key(float, 0.0, _non_negative, "0 = no DP"),
    "defense.dp.clipping-norm": Key(float, 1.0, _positive),
    "posthoc.enabled": Key(bool, True),
    "posthoc.level": Key(str, "curated", _choice(*LEVELS), "defense data: 'curated' (bundled refusals + "
                         "form-matched helpful pairs), L1 (public chat sample), L2 (aligned model), L3 (global model)"),
    "posthoc.generator": Key(str, "base", _model_source, "L2's aligned model: Hub id or folder; 'base' = the "
                             "base model, adapter off"),
    "posthoc.l1-source": Key(str, "", _data_source("", "bundled"), "L1's chat data: empty = the benign clients' "
                             "pool (data.benign + aligned pairs); 'bundled', a file or Hub id"),
    "posthoc.steps": Key(int, 10, _positive),
    "posthoc.lr": Key(float, 0.0, _non_negative, "0 = by level: curated/L1 2e-4, L2/L3 1e-4"),
    "posthoc.batch-size": Key(int, 4, _positive),
    "posthoc.num-samples": Key(int, 40, _positive, "curated/L2/L3: aligned pairs (L2/L3: harmful instructions "
                               "asked for), as many helpful; L1: pairs sampled"),
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
    "eval.every-rounds": Key(int, 0, _non_negative, "safety probe cadence; 0 = off"),
    "eval.probe-size": Key(int, 20, _positive),
    "eval.judge": Key(str, "rule", _judge, "safety judge: 'rule' (fedsafe's refusal phrases), 'paper-rule' "
                      "(the paper's) or a judge model id/folder (Llama-Guard, MD-Judge, a classifier)"),
    "eval.judges": Key(str, "", _judge_list, "more safety judges on the same answers, comma-separated (e.g. "
                       "'paper-rule'); safety_rate stays eval.judge's"),
    "eval.max-new-tokens": Key(int, 40, _between(1, 4096), "answer length in tokens; the paper: 1024"),
    "eval.temperature": Key(float, 0.0, _non_negative, "0 = greedy; > 0 samples, seeded by seed (the paper: "
                            "0.7)"),
    "eval.top-p": Key(float, 1.0, _top_p, "nucleus sampling when eval.temperature > 0 (the paper: 1.0)"),
    "eval.batch-size": Key(int, 32, _positive),
    "eval.rm-model": Key(str, "", _reward_model, "reward model (one-logit sequence classifier, Hub id or "
                         "folder) scoring the harmful answers; '' = off (the paper: "
                         "OpenAssistant/reward-model-deberta-v3-large-v2)"),
    "eval.mt1.questions": Key(str, "", _questions, "MT-1: MT-Bench questions (a file with a 'turns' list or a "
                              "prompt column, or a Hub id) answered and graded 1-10 by eval.helpfulness.*; "
                              "'' = off"),
    "eval.helpfulness.url": Key(str, "", None, "OpenAI-compatible base URL (.../v1) of the 1-10 grader "
                                "(MT-Bench single-answer prompt) of benign answers and MT-1; empty = off"),
    "eval.helpfulness.model": Key(str, "", None, "the grader's model name (the paper: gpt-4-1106-preview)"),
    "eval.helpfulness.api-key-env": Key(str, "OPENAI_API_KEY", None, "environment variable holding the "
                                        "grader's API key (none sent when unset)"),
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
    template: str = "auto"  # model.template: 'auto' | 'chat' | 'alpaca' | a Jinja file


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
class FlSettings:
    optimizer: str
    optimizer_params: dict[str, Any] = field(hash=False)  # snake_case constructor params for the optimizer
    client_algorithm: str = "none"
    fedprox_mu: float = 0.01


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
    samples_per_client: int
    single_turn: bool
    language: str
    drop_flagged: bool


@dataclass(frozen=True)
class AttackSettings:
    malicious_ids: tuple[int, ...]
    data: str
    generator: str
    instructions: str
    prompts: str
    num_samples: int
    samples_per_client: int
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
    l1_source: str
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
    judges: tuple[str, ...]  # every safety judge, eval.judge first
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    rm_model: str
    mt1_questions: str
    helpfulness_url: str
    helpfulness_model: str
    helpfulness_api_key_env: str


@dataclass(frozen=True)
class Settings:
    num_server_rounds: int
    seed: int
    output_dir: str
    resume_from: str
    model: ModelSettings
    train: TrainSettings
    fl: FlSettings
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


def _plugin_params(flat: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`<section>.<name>.<param>` keys for the chosen plug-in (prefix `<section>.<name>.`), as
    constructor kwargs."""
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
        if k not in KEYS and not (k.startswith(("defense.", "fl.")) and k.count(".") == 2)
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
    if flat["eval.mt1.questions"] and not (flat["eval.helpfulness.url"] and flat["eval.helpfulness.model"]):
        _fail("eval.mt1.questions", flat["eval.mt1.questions"], "a grader as well: set eval.helpfulness.url "
              "and eval.helpfulness.model")
    if flat["train.lr-min"] > flat["train.lr-max"]:
        _fail("train.lr-min", flat["train.lr-min"], f"at most train.lr-max={flat['train.lr-max']}")
    params = _plugin_params(flat, f"defense.{aggregator}.")
    optimizer = flat["fl.optimizer"]
    optimizer_params = _plugin_params(flat, f"fl.{optimizer}.")
    if flat["fl.client-algorithm"] == "scaffold" and flat["defense.dp.noise-multiplier"] > 0:
        _fail("fl.client-algorithm", "scaffold", "'none' or 'fedprox' with defense.dp.noise-multiplier > 0 (Flower's "
              "DP wrapper clips every array a client returns, control variates included)")
    if check_aggregator:
        from fedsafe.aggregators import get_aggregator  # light import: no model libraries

        try:
            agg = get_aggregator(aggregator, **params)
        except (ValueError, TypeError, ImportError, AttributeError) as err:
            raise ConfigError(f"defense.aggregator={aggregator!r}: {err}") from None
        needs = getattr(agg, "min_clients", 0)
        if needs > flat["clients.per-round"]:  # else round 1 fails, after every model has loaded
            _fail("clients.per-round", flat["clients.per-round"], f"at least {needs} for defense.aggregator="
                  f"{aggregator!r} with these parameters")
        _refuse_degenerate(agg, aggregator, flat)
        from fedsafe.optimizers import get_optimizer  # light import: pure tensor code

        try:
            get_optimizer(optimizer, **optimizer_params)
        except (ValueError, TypeError, ImportError, AttributeError) as err:
            raise ConfigError(f"fl.optimizer={optimizer!r}: {err}") from None

    judges = _judges(flat["eval.judge"], flat["eval.judges"])
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
            template=flat["model.template"],
        ),
        train=TrainSettings(**_section(flat, "train.")),
        fl=FlSettings(optimizer=optimizer, optimizer_params=optimizer_params,
                      client_algorithm=flat["fl.client-algorithm"], fedprox_mu=flat["fl.fedprox.mu"]),
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
            every_rounds=flat["eval.every-rounds"], probe_size=flat["eval.probe-size"],
            judge=judges[0], judges=judges,
            max_new_tokens=flat["eval.max-new-tokens"], temperature=flat["eval.temperature"],
            top_p=flat["eval.top-p"], batch_size=flat["eval.batch-size"], rm_model=flat["eval.rm-model"],
            mt1_questions=flat["eval.mt1.questions"],
            helpfulness_url=flat["eval.helpfulness.url"], helpfulness_model=flat["eval.helpfulness.model"],
            helpfulness_api_key_env=flat["eval.helpfulness.api-key-env"],
        ),
        flat=flat,
    )


def _judges(primary: str, more: str) -> tuple[str, ...]:
    """eval.judge, then each other judge of eval.judges once, in the given order."""
    specs = [s.strip() for s in [primary, *more.split(",")] if s.strip()]
    return tuple(dict.fromkeys(s.lower() if s.lower() in JUDGE_RULES else s for s in specs))


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
