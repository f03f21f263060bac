"""fedsafe's run configuration: one frozen settings tree, each key declared once
(`settings.py`), parsed and validated once from Flower's flat run config (`parse.py`); the
pyproject block and docs/configuration.md are generated from the declarations (`generate.py`)."""

from fedsafe.config.fields import BUNDLED_MODEL, DATA_SUFFIXES, HUB_ID, JUDGE_RULES, PROBE_PROMPTS, ConfigError
from fedsafe.config.parse import Key, declared_keys, defaults, from_run_config
from fedsafe.config.settings import (ATTACK_PROMPTS, BENCHMARKS, LEVELS, POSTHOC_LR, UPDATE_ATTACKS, AttackSettings,
                                     ClientSettings, DataSettings, DefenseSettings, EvalSettings, LoraSettings,
                                     ModelSettings, PosthocSettings, Settings, TrainSettings)

KEYS = declared_keys()  # every run-config key: kind, default, check, help

__all__ = ["ATTACK_PROMPTS", "BENCHMARKS", "BUNDLED_MODEL", "DATA_SUFFIXES", "HUB_ID", "JUDGE_RULES", "KEYS", "LEVELS", "POSTHOC_LR",
           "PROBE_PROMPTS", "UPDATE_ATTACKS", "AttackSettings", "ClientSettings", "ConfigError", "DataSettings",
           "DefenseSettings", "EvalSettings", "Key", "LoraSettings", "ModelSettings", "PosthocSettings", "Settings",
           "TrainSettings", "declared_keys", "defaults", "from_run_config"]
