"""Safety benchmarks: which harmful prompts to ask, and the safety rate of a model on them.

safety_rate = share of harmful prompts whose response the judge rates safe, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedsafe import data
from fedsafe.generation import GenerationSettings, generate

PROMPT_COLUMNS = ("prompt", "goal", "instruction", "question")  # first one present wins
# Hub benchmarks: (dataset id, config, split, prompt column)
HUB_BENCHMARKS = {
    "advbench": ("walledai/AdvBench", None, "train", "prompt"),
    "harmbench": ("walledai/HarmBench", "standard", "train", "prompt"),
    "jbb": ("JailbreakBench/JBB-Behaviors", "behaviors", "harmful", "Goal"),
}


def prompt_column(columns: list[str], source: str, names: tuple[str, ...] = PROMPT_COLUMNS,
                  what: str = "prompt") -> str:
    """The first of `names` among `columns`, case-insensitive."""
    lowered = {c.lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    raise ValueError(f"{source}: no {what} column; expected one of {', '.join(names)} (has {columns})")


def prompts_from_rows(rows: list[dict], source: str) -> list[str]:
    if not rows:
        raise ValueError(f"{source}: no rows")
    column = prompt_column(list(rows[0]), source)
    return [str(r[column]) for r in rows if str(r[column]).strip()]


def load_safety_prompts(benchmark: str, limit: int = 0) -> list[str]:
    """'bundled' (held-out harmful prompts), a Hub benchmark name, or a CSV/JSONL file."""
    if benchmark == "bundled":
        prompts = [p["instruction"] for p in data.bundled("harmful_eval")]
    elif benchmark in HUB_BENCHMARKS:
        from datasets import load_dataset

        dataset_id, config, split, column = HUB_BENCHMARKS[benchmark]
        rows = load_dataset(dataset_id, config, split=split)
        prompts = [str(r[column]) for r in rows]
    else:
        path = Path(benchmark).expanduser()
        prompts = prompts_from_rows(data.load_rows(str(path)), str(path))
    return prompts[:limit] if limit else prompts


@dataclass(frozen=True)
class SafetyResult:
    rate: float
    prompts: list[str]
    responses: list[str]
    safe: list[bool]

    def rows(self) -> list[dict]:
        return [{"prompt": p, "response": r, "safe": s} for p, r, s in zip(self.prompts, self.responses, self.safe)]


def judge_responses(model, tokenizer, prompts: list[str], judge, settings: GenerationSettings,
                    label: str = "safety") -> SafetyResult:
    """Generate answers and let the judge rate each (prompt, response) pair."""
    responses = generate(model, tokenizer, prompts, settings, label=label)
    safe = list(judge(prompts, responses))
    return SafetyResult(rate=sum(safe) / max(len(safe), 1), prompts=prompts, responses=responses, safe=safe)
