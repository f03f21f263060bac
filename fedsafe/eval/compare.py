"""`fedsafe compare`: two evaluations of the same prompts, prompt by prompt.

A 60-prompt safety rate moves 1.7 points per prompt, so a gap between two runs says little
until one knows how many prompts changed sides and how far the gap would move with other
prompts of the same kind. Both answers come from the per-prompt rows every evaluation writes
(RUN_DIR/eval/<stage>.jsonl, or `fedsafe eval --out`): the prompts only one run answers safely,
and a paired bootstrap interval of the difference. The interval covers the choice of prompts,
not training randomness: two runs of one config that draw other clients differ by more.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from fedsafe.eval.report import markdown_table, percent
from fedsafe.files import read_jsonl

# (row kind, the row's key holding the outcome, the rate's name): safe answers to harmful
# prompts, refusals of benign ones.
OUTCOMES = (("harmful", "safe", "safety rate"), ("benign", "refused", "benign refusal"))
RESAMPLES = 10_000


class CompareError(ValueError):
    """Two evaluations that cannot be compared prompt by prompt; the message is one line."""


@dataclass(frozen=True)
class PairedDifference:
    name: str
    prompts: int
    rate_a: float
    rate_b: float
    only_a: int  # prompts where the outcome holds for A's answer and not for B's
    only_b: int
    low: float  # 95 % paired bootstrap interval of rate_b - rate_a
    high: float

    @property
    def difference(self) -> float:
        return self.rate_b - self.rate_a


def rows_path(source: Path, stage: str) -> Path:
    """A run directory's rows of `stage`, or a rows file as given."""
    path = source / "eval" / f"{stage}.jsonl" if source.is_dir() else source
    if not path.is_file():
        raise CompareError(f"{path}: no per-prompt rows (a run directory with eval/{stage}.jsonl, "
                           f"or a JSONL file from `fedsafe eval --out`)")
    return path


def outcomes(path: Path) -> dict[str, dict[str, bool]]:
    """{row kind: {prompt: outcome}} for the kinds in OUTCOMES, read once."""
    found: dict[str, dict[str, bool]] = {kind: {} for kind, _, _ in OUTCOMES}
    keys = {kind: key for kind, key, _ in OUTCOMES}
    try:
        for row in read_jsonl(path):
            if (kind := row.get("kind")) in keys:
                found[kind][row["prompt"]] = bool(row[keys[kind]])
    except (ValueError, KeyError, AttributeError) as err:  # not JSON lines, or rows of another shape
        raise CompareError(f"{path}: not per-prompt evaluation rows (JSON objects with kind, prompt and "
                           f"{' or '.join(keys.values())}): {type(err).__name__}: {err}") from None
    return found


def paired_difference(a: list[bool], b: list[bool], name: str, seed: int = 0) -> PairedDifference:
    """B minus A on the same prompts (same order), with a seeded paired bootstrap interval."""
    n = len(a)
    diffs = [int(y) - int(x) for x, y in zip(a, b)]
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(RESAMPLES))
    return PairedDifference(name=name, prompts=n, rate_a=sum(a) / n, rate_b=sum(b) / n,
                            only_a=diffs.count(-1), only_b=diffs.count(1),
                            low=boots[int(0.025 * RESAMPLES)], high=boots[int(0.975 * RESAMPLES) - 1])


def compare(source_a: Path, source_b: Path, stage: str = "after_fl", seed: int = 0) -> list[PairedDifference]:
    """Every outcome both evaluations scored, on the prompts they share; refuses prompt sets
    that differ (another benchmark or limit)."""
    path_a, path_b = rows_path(Path(source_a), stage), rows_path(Path(source_b), stage)
    rows_a, rows_b = outcomes(path_a), outcomes(path_b)
    results = []
    for kind, _, name in OUTCOMES:
        a, b = rows_a[kind], rows_b[kind]
        if not a and not b:
            continue
        if a.keys() != b.keys():
            missing = len(a.keys() ^ b.keys())
            raise CompareError(f"{path_b}: {missing} {kind} prompts are in only one of the two evaluations "
                               f"({len(a)} in {path_a}, {len(b)} here); compare evaluations of the same prompts")
        prompts = sorted(a)
        results.append(paired_difference([a[p] for p in prompts], [b[p] for p in prompts], name, seed))
    if not results:
        raise CompareError(f"{path_a}: no harmful or benign rows to compare")
    return results


def format_table(results: list[PairedDifference], label_a: str, label_b: str) -> str:
    header = ["outcome", "prompts", "A", "B", "B - A", "only A", "only B", "95 % paired bootstrap"]
    rows = [[r.name, r.prompts, percent(r.rate_a), percent(r.rate_b), f"{100 * r.difference:+.1f}", r.only_a,
             r.only_b, f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]"] for r in results]
    note = ("only A / only B: prompts where just that run answered safely (harmful) or refused (benign). "
            "The interval resamples prompts; it does not cover training randomness.")
    return "\n".join([f"A: {label_a}", f"B: {label_b}", "", *markdown_table(header, rows), "", note])
