"""The settings tree: every run-config key of fedsafe, declared once as a dataclass field with its
default, help and check (`setting`). Sections nest as the keys do: `eval.safety.limit` is
`Settings.eval.safety.limit`. Parsing, validation, docs/configuration.md and the
`[tool.flwr.app.config]` block of pyproject.toml are derived from these declarations
(`fedsafe/config/parse.py`, `fedsafe/config/generate.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fedsafe.config import fields as f
from fedsafe.config.fields import BUNDLED_MODEL, setting

LEVELS = ("curated", "L1", "L2", "L3")  # fedsafe's curated set, then the paper's three levels
ATTACK_PROMPTS = ("fedsafe", "paper")  # fedsafe/attacks/prompts.py
# Post-hoc learning rate per level when posthoc.lr = 0 (why: docs/results.md, "Post-hoc rates").
POSTHOC_LR = {"curated": 2e-4, "L1": 2e-4, "L2": 1e-4, "L3": 1e-4}
UPDATE_ATTACKS = ("none", "scale", "sign-flip", "gaussian", "stealthy-norm", "probe-aware", "probe-aware-cover")
BENCHMARKS = ("bundled", "advbench", "harmbench", "jbb")


@dataclass(frozen=True)
class LoraSettings:
    r: int = setting(16, "LoRA rank", f.positive)
    alpha: int = setting(32, "LoRA scaling numerator (scale = alpha / r)", f.positive)
    dropout: float = setting(0.05, "LoRA dropout", f.unit)
    target_modules: tuple[str, ...] = setting("q_proj,k_proj,v_proj,o_proj", "modules that get LoRA, "
                                              "comma-separated", f.module_list, parse=f.csv_tuple)


@dataclass(frozen=True)
class ModelSettings:
    name: str = setting(BUNDLED_MODEL, "the bundled default, a Hub id or a local model folder", f.model_source())
    quantization: int = setting(4, "4 = NF4 + double quantization, 8 = int8, 0 = none", f.choice(0, 4, 8))
    trust_remote_code: bool = setting(False, "passed to from_pretrained")
    gradient_checkpointing: bool = setting(False, "trade compute for memory")
    server_dense: bool = setting(True, "the server runs 4-bit weights dequantized once (CPU only): the same "
                                 "numbers, faster, a dense model's memory; clients stay 4-bit")
    template: str = setting("auto", "prompt template: 'auto' (the tokenizer's chat template, else alpaca), 'chat' "
                            "(the tokenizer's, required), 'alpaca' (the paper's, for base models), or a Jinja "
                            "chat-template file", f.template)
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int = setting(8, "optimizer steps per client per round", f.positive)
    batch_size: int = setting(4, "examples per local step", f.positive)
    seq_length: int = setting(160, "tokens; longer samples are truncated", f.positive)
    lr_max: float = setting(1e-3, "learning rate of round 1; cosine decay over rounds, as in the paper", f.positive)
    lr_min: float = setting(1e-4, "learning rate the cosine decays towards", f.non_negative)

    def lr(self, server_round: int, num_rounds: int) -> float:
        """Cosine decay from lr-max (round 1) towards lr-min, as in OpenFedLLM / the paper."""
        progress = (server_round - 1) / max(num_rounds, 1)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * progress))


CLIENT_ALGORITHMS = ("none", "fedprox", "scaffold")


@dataclass(frozen=True)
class FedproxSettings:
    mu: float = setting(0.01, "FedProx: loss + mu/2 ||w - w_global||^2 on the LoRA weights", f.non_negative)


@dataclass(frozen=True)
class FlSettings:
    optimizer: str = setting("sgd", "server optimizer after the aggregator: sgd, fedavgm, fedadagrad, fedyogi, "
                             "fedadam or 'package.module:attr'; its parameters are fl.<name>.<param>")
    client_algorithm: str = setting("none", "local training: none, fedprox (proximal term), scaffold (control "
                                    "variates)", f.choice(*CLIENT_ALGORITHMS))
    fedprox: FedproxSettings = field(default_factory=FedproxSettings)
    # snake_case constructor parameters of the chosen optimizer, from its fl.<name>.* keys
    optimizer_params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ClientSettings:
    num: int = setting(10, "clients (partitions = SuperNodes)", f.positive)
    per_round: int = setting(4, "clients sampled each round, seeded", f.positive)
    timeout: float = setting(1800.0, "seconds to wait for nodes and replies", f.positive)
    sampling: str = setting("paired", "paired/stratified: each round's malicious share matches the federation's; "
                            "paired: otherwise the no-attack run's clients; uniform: as Flower's FedAvg",
                            f.choice("paired", "stratified", "uniform"))
    reserve: int = setting(0, "extra clients trained each round, standing in (in draw order) for sampled ones "
                           "that fail or that a rule taking reserves excludes", f.non_negative)


@dataclass(frozen=True)
class DataSettings:
    benign: str = setting("bundled", "benign clients' data: 'bundled', a .jsonl/.json/.csv file, a dataset "
                          "folder or a Hub id", f.data_source("bundled"))
    aligned_pairs: int = setting(60, "bundled refusal pairs added to the benign pool", f.non_negative)
    instruction_column: str = setting("instruction", "instruction column of a file or Hub data set")
    response_column: str = setting("response", "response column of a file or Hub data set")
    samples_per_client: int = setting(0, "pairs each client draws from data.benign, seeded (Hub sets streamed, "
                                      "never downloaded whole); 0 = an equal share of all (paper: 500)",
                                      f.non_negative)
    single_turn: bool = setting(False, "data.benign rows: keep one-exchange conversations only")
    language: str = setting("", "data.benign rows: keep those whose `language` column is this, e.g. 'English'; "
                            "'' = any")
    drop_flagged: bool = setting(False, "data.benign rows: drop conversations whose first answer moderation "
                                 "flagged (LMSYS `openai_moderation`, else WildChat's `toxic`)")


@dataclass(frozen=True)
class AttackSettings:
    num_malicious: int = setting(3, "the last N partitions are malicious", f.non_negative)
    malicious_ids: tuple[int, ...] = setting("", "explicit malicious partition ids ('7,8,9'); overrides "
                                             "num-malicious", f.id_list, parse=f.id_tuple)
    data: str = setting("generated", "attack pairs: 'generated', a file, a dataset folder or a Hub id "
                        "(BeaverTails layout: unsafe rows)", f.data_source("generated"))
    generator: str = setting("base", "model that generates attack data; 'base' = the experiment's model",
                             f.model_source("base"))
    instructions: str = setting("generated", "step-1 instructions: 'generated', 'bundled' or a file",
                                f.data_source("generated", "bundled"))
    prompts: str = setting("fedsafe", "generation prompts: 'fedsafe' (one instruction per request) or 'paper' "
                           "(numbered lists of 10, split; an 'answer directly' suffix)", f.choice(*ATTACK_PROMPTS))
    num_samples: int = setting(96, "generation attempts", f.positive)
    samples_per_client: int = setting(0, "attack pairs per malicious client, seeded; 0 = an equal share of all "
                                      "attack pairs (paper: 500)", f.non_negative)
    benign_mix: float = setting(0.0, "share of benign samples in an attacker's data (stealth)", f.unit)
    update: str = setting("none", "model poisoning applied to the attacker's delta", f.choice(*UPDATE_ATTACKS))
    update_factor: float = setting(10.0, "scale for 'scale'/'sign-flip', std for 'gaussian'", f.positive)
    probe_tolerance: float = setting(0.1, "'probe-aware': margin drop its own probe may show",
                                     f.non_negative)


@dataclass(frozen=True)
class DpSettings:
    noise_multiplier: float = setting(0.0, "central DP noise (Flower's fixed clipping); 0 = no DP",
                                      f.non_negative)
    clipping_norm: float = setting(1.0, "central DP clipping norm", f.positive)


@dataclass(frozen=True)
class DefenseSettings:
    aggregator: str = setting("fedavg", "a registered aggregator or 'package.module:attr'; its parameters "
                              "are defense.<name>.<param>")
    dp: DpSettings = field(default_factory=DpSettings)
    # snake_case constructor parameters of the chosen aggregator, from its defense.<name>.* keys
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PosthocSettings:
    enabled: bool = setting(True, "run the post-hoc defense after the rounds")
    level: str = setting("curated", "defense data: 'curated' (bundled refusals + form-matched helpful pairs), L1 "
                         "(public chat sample), L2 (aligned model), L3 (global model)", f.choice(*LEVELS))
    generator: str = setting("base", "L2's aligned model: Hub id or folder; 'base' = the base model, adapter off",
                             f.model_source("base"))
    l1_source: str = setting("", "L1's chat data: empty = the benign clients' pool (data.benign + aligned pairs); "
                             "'bundled', a file or Hub id", f.data_source("", "bundled"))
    steps: int = setting(10, "fine-tune steps", f.positive)
    lr: float = setting(0.0, "fine-tune learning rate; 0 = by level: curated/L1 2e-4, L2/L3 1e-4", f.non_negative)
    batch_size: int = setting(4, "fine-tune batch size (half aligned, half helpful)", f.positive)
    num_samples: int = setting(40, "curated/L2/L3: aligned pairs (L2/L3: harmful instructions asked for), as many "
                               "helpful; L1: pairs sampled", f.positive)
    borderline_share: float = setting(0.0, "share of the helpful half drawn from borderline benign pairs "
                                      "(edgy-sounding requests)", f.unit)
    select_every: int = setting(0, "check the probe prompts every N steps and keep the best adapter; 0 = keep "
                                "the last", f.non_negative)
    select_size: int = setting(20, "harmful and as many benign probe prompts for select-every",
                               f.probe_prompts)


@dataclass(frozen=True)
class SafetyEvalSettings:
    benchmark: str = setting("bundled", "harmful prompts: 'bundled', 'advbench', 'harmbench', 'jbb', or a "
                             "file with a prompt column", f.data_source(*BENCHMARKS))
    limit: int = setting(0, "harmful prompts evaluated; 0 = all", f.non_negative)


@dataclass(frozen=True)
class BenignEvalSettings:
    limit: int = setting(0, "held-out benign prompts evaluated; 0 = all", f.non_negative)


@dataclass(frozen=True)
class Mt1Settings:
    questions: str = setting("", "MT-1: MT-Bench questions (a file with a 'turns' list or a prompt column, or a "
                             "Hub id) answered and graded 1-10 by eval.helpfulness.*; '' = off", f.questions)


@dataclass(frozen=True)
class GraderSettings:
    url: str = setting("", "OpenAI-compatible base URL (.../v1) of the 1-10 grader (MT-Bench single-answer "
                       "prompt) of benign answers and MT-1; empty = off")
    model: str = setting("", "the grader's model name (the paper: gpt-4-1106-preview)")
    api_key_env: str = setting("OPENAI_API_KEY", "environment variable holding the grader's API key (none sent "
                               "when unset)")


@dataclass(frozen=True)
class EvalSettings:
    safety: SafetyEvalSettings = field(default_factory=SafetyEvalSettings)
    benign: BenignEvalSettings = field(default_factory=BenignEvalSettings)
    initial: bool = setting(True, "evaluate the base model first (the same in every run of one model: a sweep "
                            "does it once)")
    initial_cache: bool = setting(True, "reuse the initial evaluation from the fedsafe cache, keyed by model, "
                                  "prompts, generation settings, judge and code")
    every_rounds: int = setting(0, "safety probe cadence in rounds; 0 = off", f.non_negative)
    probe_size: int = setting(20, "harmful prompts of the per-round safety probe", f.positive)
    judge: str = setting("rule", "safety judge: 'rule' (fedsafe's refusal phrases), 'paper-rule' (the paper's) "
                         "or a judge model id/folder (Llama-Guard, MD-Judge, a classifier)", f.judge)
    # every safety judge, eval.judge first (derived from eval.judge and eval.judges when parsed)
    judges: tuple[str, ...] = setting("", "more safety judges on the same answers, comma-separated (e.g. "
                                      "'paper-rule'); safety_rate stays eval.judge's", f.judge_list,
                                      parse=f.csv_tuple)
    max_new_tokens: int = setting(40, "answer length in tokens; the paper: 1024", f.between(1, 4096))
    temperature: float = setting(0.0, "0 = greedy; > 0 samples, seeded by seed (the paper: 0.7)", f.non_negative)
    top_p: float = setting(1.0, "nucleus sampling when eval.temperature > 0 (the paper: 1.0)", f.top_p)
    batch_size: int = setting(32, "prompts per generation batch", f.positive)
    rm_model: str = setting("", "reward model (one-logit sequence classifier, Hub id or folder) scoring the "
                            "harmful answers; '' = off (the paper: OpenAssistant/reward-model-deberta-v3-large-v2)",
                            f.reward_model)
    mt1: Mt1Settings = field(default_factory=Mt1Settings)
    helpfulness: GraderSettings = field(default_factory=GraderSettings)


@dataclass(frozen=True)
class Settings:
    num_server_rounds: int = setting(7, "federated rounds", f.positive)
    seed: int = setting(0, "seeds sampling, LoRA init, data order and generation", f.non_negative)
    output_dir: str = setting("", "runs go here (absolute); empty: ~/.fedsafe/runs", f.absolute_or_empty)
    resume_from: str = setting("", "a run directory to continue (same config)")
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    fl: FlSettings = field(default_factory=FlSettings)
    clients: ClientSettings = field(default_factory=ClientSettings)
    data: DataSettings = field(default_factory=DataSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    defense: DefenseSettings = field(default_factory=DefenseSettings)
    posthoc: PosthocSettings = field(default_factory=PosthocSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    flat: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # the resolved run config

    def is_malicious(self, partition_id: int) -> bool:
        return partition_id in self.attack.malicious_ids
