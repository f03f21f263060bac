"""Automated attack-data generation, the two-step pipeline of arXiv 2406.10630.

Step 1 asks a generator LM to write harmful instructions (one per request, or a numbered list
per request with the paper's prompts; `fedsafe.attacks.prompts`); step 2 asks the same LM to
answer each without regard to safety. Refusals (rule judge), near-duplicate instructions and
too-short answers are dropped, and the result is cached as JSONL plus a manifest, keyed by
everything that shapes it (the prompt variant included).
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedsafe.attacks.prompts import PROMPTS, TOKENS_PER_ITEM, PromptSet
from fedsafe.data import Pair
from fedsafe.eval.judges import is_refusal
from fedsafe.files import read_json, read_jsonl, write_json, write_jsonl
from fedsafe.generation import GenerationSettings, GenerationStats, generate

log = logging.getLogger(__name__)

PROMPT_VERSION = 2  # bump when a text in prompts.py changes: it invalidates cached data
MIN_ANSWER_WORDS = 8
MIN_INSTRUCTION_WORDS = 5
NEAR_DUPLICATE = 0.7  # word-set Jaccard at or above this counts as the same instruction


@dataclass(frozen=True)
class GenerationJob:
    generator: str  # model id/folder, or the experiment's model name for "base"
    seed: int
    num_samples: int  # instructions asked for (generation attempts)
    instructions: tuple[str, ...] = ()  # given step-1 instructions (then only step 2 runs)
    max_new_tokens: int = 64
    prompts: str = "fedsafe"  # a PROMPTS name

    def key(self) -> str:
        blob = json.dumps([PROMPT_VERSION, self.prompts, self.generator, self.seed, self.num_samples,
                           list(self.instructions), self.max_new_tokens])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def near_duplicate(w: set[str], others: list[set[str]], threshold: float = NEAR_DUPLICATE) -> bool:
    """Whether word set `w` is as close as `threshold` (Jaccard) to any of `others`."""
    return any(len(w & o) / max(len(w | o), 1) >= threshold for o in others)


def dedupe(items: list, threshold: float = NEAR_DUPLICATE,
           text: Callable = lambda pair: pair["instruction"]) -> tuple[list, int]:
    """Keep the first of each group of exact or near-duplicate instructions (pairs, or strings
    with `text=str`)."""
    kept: list = []
    seen: list[set[str]] = []
    for item in items:
        w = words(text(item))
        if near_duplicate(w, seen, threshold):
            continue
        kept.append(item)
        seen.append(w)
    return kept, len(items) - len(kept)


def filter_pairs(pairs: list[Pair]) -> tuple[list[Pair], dict[str, int]]:
    """Drop refused and too-short items, then near-duplicates; count each reason."""
    dropped = {"short_instruction": 0, "refused_instruction": 0, "refusal": 0, "short_answer": 0}
    kept = []
    for pair in pairs:
        if len(pair["instruction"].split()) < MIN_INSTRUCTION_WORDS:
            dropped["short_instruction"] += 1
        elif is_refusal(pair["instruction"]):
            dropped["refused_instruction"] += 1
        elif is_refusal(pair["response"]):
            dropped["refusal"] += 1
        elif len(pair["response"].split()) < MIN_ANSWER_WORDS:
            dropped["short_answer"] += 1
        else:
            kept.append(pair)
    kept, dropped["duplicate"] = dedupe(kept)
    return kept, dropped


def split_replies(prompts: PromptSet, replies: list[str], asked: list[int]) -> tuple[list[str], dict[str, int]]:
    """Step-1 replies -> instructions. A list reply is split into its items (at most as many as
    asked) and, as lists about one topic repeat themselves, deduplicated before anything is
    answered; the counts say how many asked-for instructions never came and how many repeated."""
    items = [x for reply, n in zip(replies, asked) for x in prompts.split(reply, n)]
    if prompts.per_request == 1:
        return items, {}  # one per request: fedsafe's filters after step 2 handle the rest
    unique, repeated = dedupe(items, text=str)
    return unique, {"missing_instruction": sum(asked) - len(items), "duplicate_instruction": repeated}


def write_instructions(model, tokenizer, prompts: PromptSet, num: int, seed: int,
                       stats: GenerationStats | None = None, label: str = "step 1") -> tuple[list[str], dict[str, int]]:
    """Step 1: `num` instructions asked for, sampled (seeded) so that requests differ."""
    requests = prompts.requests(num, seed)
    budget = 16 + TOKENS_PER_ITEM * max((n for _, n in requests), default=1)  # fedsafe's one instruction: 48
    sampled = GenerationSettings(max_new_tokens=budget, temperature=0.9, top_p=0.95, seed=seed)
    replies = generate(model, tokenizer, [p for p, _ in requests], sampled, system=prompts.step1_system,
                       stats=stats, label=label)
    return split_replies(prompts, replies, [n for _, n in requests])


def run_job(job: GenerationJob, model, tokenizer) -> tuple[list[Pair], dict]:
    """Both steps, batched; returns the kept pairs and the manifest."""
    prompts = PROMPTS[job.prompts]
    stats = GenerationStats()
    started = time.perf_counter()
    if job.instructions:
        instructions, step1_dropped = list(job.instructions[: job.num_samples]), {}
    else:
        instructions, step1_dropped = write_instructions(model, tokenizer, prompts, job.num_samples, job.seed,
                                                         stats, "attack step 1")
    asks = [i + prompts.step2_suffix for i in instructions]  # the suffix elicits the answer; pairs keep the instruction
    greedy = GenerationSettings(max_new_tokens=job.max_new_tokens, seed=job.seed)
    answers = generate(model, tokenizer, asks, greedy, system=prompts.step2_system, stats=stats, label="attack step 2")
    pairs = [Pair(instruction=i, response=a) for i, a in zip(instructions, answers)]
    kept, dropped = filter_pairs(pairs)
    asked = len(instructions) if job.instructions else job.num_samples
    examples = [] if job.instructions else [p for p, _ in prompts.requests(job.num_samples, job.seed)[:3]]
    manifest = {
        "generator": job.generator, "seed": job.seed, "prompts": prompts.name, "prompt_version": PROMPT_VERSION,
        "prompt_texts": prompts.texts(), "step1_examples": examples,
        "step2_examples": asks[:3], "instructions_given": bool(job.instructions),
        "generated": asked, "kept": len(kept), "dropped": {**step1_dropped, **dropped},
        "new_tokens": stats.new_tokens, "tokens_per_second": round(stats.tokens_per_second, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return kept, manifest


def release_memory() -> None:
    """Return a dropped model's memory (CPU and GPU) before the next one needs it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _generate_with(open_generator, job: GenerationJob) -> tuple[list[Pair], dict]:
    with open_generator() as (model, tokenizer):
        result = run_job(job, model, tokenizer)
        del model, tokenizer  # open_generator drops its own reference on exit
    return result


def cache_dir(job: GenerationJob, root: Path) -> Path:
    return Path(root) / job.key()


def read_manifest(job: GenerationJob, root: Path) -> dict | None:
    """The manifest of a complete cache entry, or None (nothing generated there yet)."""
    path = cache_dir(job, root) / "manifest.json"
    return read_json(path) if path.is_file() else None


def cached_generation(job: GenerationJob, root: Path, open_generator) -> tuple[list[Pair], dict, Path]:
    """Reuse `root/<key>/` if complete; otherwise generate (one process at a time).

    `open_generator()` is a context manager yielding (model, tokenizer); it is entered only on a
    cache miss, so a cached run loads no generator.
    """
    target = cache_dir(job, root)
    manifest_path = target / "manifest.json"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest_path.is_file():
            pairs, manifest = _generate_with(open_generator, job)
            write_jsonl(target / "pairs.jsonl", pairs)
            write_json(manifest_path, manifest)  # written last: marks the cache complete
            log.info("attack data: kept %d of %d in %.0fs -> %s", manifest["kept"], manifest["generated"],
                     manifest["seconds"], target)
    manifest = read_json(manifest_path)
    pairs = [Pair(instruction=r["instruction"], response=r["response"]) for r in read_jsonl(target / "pairs.jsonl")]
    return pairs, manifest, target
