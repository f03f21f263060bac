"""Behaviour probe: what a client update does to the model, measured on the server.

For each update the probe applies it to the current global adapter and measures, against the
global adapter itself, the change of
- the refusal margin on harmful probe prompts: mean per-token log-likelihood of a refusal minus
  that of a compliant answer. Column 0; negative means the update pushes toward compliance.
  The compliant answers are the base model's own greedy answers to the same prompts (refusals
  dropped), written once when the server starts: what compliance looks like for this model,
  and what an attacker who generates its data with such a model trains on. Being contrastive,
  the margin ignores the general gain in likelihood that any fine-tuning brings;
- the mean log-likelihood of helpful answers on benign probe prompts (column 1; negative means
  the update hurts ordinary answers);
- the over-refusal margin on the same benign prompts: refusal minus helpful answer (column 2;
  positive means the update makes the model refuse ordinary requests more). An update that
  teaches refusing everything raises columns 0 and 2 alike; one that teaches refusing harmful
  requests raises column 0 alone.
It reuses the evaluation's log-likelihood code. The probe prompts (bundled *_probe files) are
disjoint from the safety eval prompts and from the post-hoc defense data; asserted at build.
"""

from __future__ import annotations

import time

import torch

from fedsafe import data, models
from fedsafe.eval.helpfulness import example_logliks, scored_examples
from fedsafe.eval.judges import RuleJudge
from fedsafe.generation import GenerationSettings, generate

COLUMNS = ("refusal_margin_change", "helpful_loglik_change", "over_refusal_change")
OPENING_TOKENS = 12  # each target's first tokens: the opening decides refusal vs compliance, and
# every probe pair is scored n + 1 times a round, so the probe stays a small share of the round


def _disjoint(pairs: list[data.Pair], eval_prompts: list[str]) -> None:
    used = {p["instruction"] for name in ("harmful_train", "helpful_train", "borderline_train") for p in data.bundled(name)}
    probes = {p["instruction"] for p in pairs}
    assert not probes & set(eval_prompts), "probe prompts overlap the safety eval prompts"
    assert not probes & used, "probe prompts overlap training / defense data"


def benign_probe_size(size: int) -> int:
    """Half as many benign probe prompts as harmful ones: the refusal margin decides unless the
    rule is two-sided, and every pair is scored n + 1 times a round."""
    return max(1, size // 2)


def probe_pairs(size: int, eval_prompts: list[str], benign_size: int = 0) -> tuple[list[data.Pair], list[data.Pair]]:
    """`size` harmful pairs (refusal targets) and `benign_size` helpful ones (0: `benign_probe_size`)."""
    benign = data.bundled("helpful_probe")[:benign_size or benign_probe_size(size)]
    harmful = data.bundled("harmful_probe")[:size]
    _disjoint(harmful + benign, eval_prompts)
    return harmful, benign


def selection_prompts(size: int, eval_prompts: list[str]) -> tuple[list[str], list[str]]:
    """`size` harmful probe prompts and as many benign ones, up to half of them borderline
    (worded like harmful requests): over-refusal shows first on those."""
    borderline = data.bundled("borderline_probe")[: size // 2]
    harmful = data.bundled("harmful_probe")[:size]
    benign = borderline + data.bundled("helpful_probe")[: size - len(borderline)]
    _disjoint(harmful + benign, eval_prompts)
    return [p["instruction"] for p in harmful], [p["instruction"] for p in benign]


def compliant_pairs(model, tokenizer, harmful: list[data.Pair], batch_size: int = 32) -> list[data.Pair]:
    """The model's own greedy answers to the harmful probe prompts, refusals dropped. Call it
    with the base behaviour loaded (the initial adapter)."""
    settings = GenerationSettings(max_new_tokens=OPENING_TOKENS, batch_size=batch_size)
    answers = generate(model, tokenizer, [p["instruction"] for p in harmful], settings, label="probe compliant answers")
    return keep_compliant(harmful, answers)


def keep_compliant(harmful: list[data.Pair], answers: list[str]) -> list[data.Pair]:
    """(instruction, answer) for each answer that is not empty and not a refusal (rule judge)."""
    refused = RuleJudge().refusals(answers)
    pairs = [data.Pair(instruction=p["instruction"], response=a)
             for p, a, r in zip(harmful, answers, refused, strict=True) if a and not r]
    if not pairs:
        raise ValueError("the model refused every harmful probe prompt: the safety-probe has no compliant answers "
                         "to contrast refusals with")
    return pairs


def openings(tokenizer, pairs: list[data.Pair], tokens: int = OPENING_TOKENS) -> list[data.Pair]:
    """Each response cut to its first `tokens` tokens."""
    cut = [tokenizer.decode(tokenizer(p["response"], add_special_tokens=False)["input_ids"][:tokens]).strip()
           for p in pairs]
    return [data.Pair(instruction=p["instruction"], response=r) for p, r in zip(pairs, cut)]


def benign_refusals(helpful: list[data.Pair], harmful: list[data.Pair]) -> list[data.Pair]:
    """Each benign probe prompt with one of the harmful pairs' refusals (in turn)."""
    return [data.Pair(instruction=p["instruction"], response=harmful[i % len(harmful)]["response"])
            for i, p in enumerate(helpful)]


class BehaviourProbe:
    """`probe(global_state, updates[n, d]) -> scores[n, 3]` (`COLUMNS`) on the server's model.
    `harmful`: harmful prompts with refusals; `compliant`: harmful prompts with compliant answers;
    `helpful`: benign prompts with helpful answers. Every target is scored on its opening
    (`OPENING_TOKENS`), with no end-of-turn after it."""

    def __init__(self, model, tokenizer, harmful: list[data.Pair], compliant: list[data.Pair],
                 helpful: list[data.Pair], seq_length: int):
        self.model, self.tokenizer = model, tokenizer
        harmful, compliant, helpful = (openings(tokenizer, p) for p in (harmful, compliant, helpful))
        self.sets = (harmful, compliant, helpful, benign_refusals(helpful, harmful))  # as scored, in this order
        self.examples = scored_examples(tokenizer, [p for pairs in self.sets for p in pairs], seq_length,
                                        close_turn=False)
        self.seconds = 0.0  # total time spent probing, for the cost report

    def _mean_logliks(self) -> torch.Tensor:
        """(3,) refusal margin, mean per-token log-likelihood of helpful answers and over-refusal
        margin; the four sets scored in one call (one pass of the shared prompt prefix)."""
        sums, counts = example_logliks(self.model, self.examples, self.tokenizer.pad_token_id)
        sizes = [len(pairs) for pairs in self.sets]
        refusal, compliant, helpful, benign_refusal = (
            s.sum() / c.sum().clamp(min=1) for s, c in zip(sums.split(sizes), counts.split(sizes)))
        return torch.stack([refusal - compliant, helpful, benign_refusal - helpful])

    def __call__(self, global_state: dict[str, torch.Tensor], updates: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        models.set_adapter_state(self.model, global_state)
        reference = self._mean_logliks()
        flat = models.flatten(global_state)
        scores = []
        for delta in updates:  # (d,)
            models.set_adapter_state(self.model, models.unflatten(flat + delta, global_state))
            scores.append(self._mean_logliks() - reference)
        models.set_adapter_state(self.model, global_state)
        self.seconds += time.perf_counter() - started
        return torch.stack(scores)  # (n, 3)
