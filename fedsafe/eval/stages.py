"""One evaluation of a model at a named stage (initial, after_fl, after_posthoc): safety rate (one
or more judges), over-refusal, helpfulness, and, when configured, the paper's RM and MT-1, with
every answer and per-prompt value saved beside results.json.

The paper's protocol (arXiv 2406.10630): answers sampled at temperature 0.7 up to 1,024 new tokens
(eval.temperature, eval.max-new-tokens), judged by its phrase rule ('paper-rule') and MD-Judge,
scored by a reward model (eval.rm-model) and MT-1 (eval.mt1.questions with a grader).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from fedsafe import data
from fedsafe.config import Settings
from fedsafe.eval.grader import Grader
from fedsafe.eval.helpfulness import loglik_proxy
from fedsafe.eval.judges import build_judge, is_refusal
from fedsafe.eval.mtbench import load_questions
from fedsafe.eval.reward import RewardModel
from fedsafe.eval.safety import judge_responses, load_safety_prompts
from fedsafe.files import write_jsonl
from fedsafe.generation import GenerationSettings, generate

log = logging.getLogger(__name__)
NO_LLM_JUDGE = "not configured (set eval.helpfulness.url and eval.helpfulness.model)"


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / max(len(flags), 1), 4)


class Evaluator:
    def __init__(self, settings: Settings, run_dir: Path | None):
        cfg = settings.eval
        self.run_dir = run_dir
        self.harmful = load_safety_prompts(cfg.safety.benchmark, cfg.safety.limit)
        benign = data.bundled("helpful_eval")
        self.benign = benign[: cfg.benign.limit] if cfg.benign.limit else benign
        self.judges = {spec: build_judge(spec) for spec in cfg.judges}  # eval.judge first
        self.judge = next(iter(self.judges.values()))  # the primary judge: safety_rate, the probe, post-hoc
        self.generation = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                             temperature=cfg.temperature, top_p=cfg.top_p, seed=settings.seed)
        self.seq_length = settings.train.seq_length
        self.probe_size = cfg.probe_size
        self.grader = (Grader(cfg.helpfulness.url, cfg.helpfulness.model, cfg.helpfulness.api_key_env)
                       if cfg.helpfulness.url and cfg.helpfulness.model else None)
        # Loaded up front, so a wrong id fails before training rather than after it.
        self.mt1 = load_questions(cfg.mt1.questions) if cfg.mt1.questions else []
        self.reward = RewardModel(cfg.rm_model) if cfg.rm_model else None

    def stage(self, name: str, model, tokenizer, rows_path: Path | None = None) -> dict:
        """Full evaluation; per-prompt rows go to `rows_path`, else to eval/<name>.jsonl in the
        run directory (none without either)."""
        started = time.perf_counter()
        metrics, harmful_rows = self._harmful(name, model, tokenizer)
        benign_metrics, benign_rows = self._benign(name, model, tokenizer)
        metrics.update(benign_metrics)
        mt1_rows = []
        if self.mt1:
            mt1_metrics, mt1_rows = self._mt1(name, model, tokenizer)
            metrics.update(mt1_metrics)
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        if rows_path is None and self.run_dir is not None:
            rows_path = self.run_dir / "eval" / f"{name}.jsonl"
        if rows_path is not None:
            write_jsonl(rows_path, harmful_rows + benign_rows + mt1_rows)
        log.info("eval %s: safety %.1f %%, benign refusal %.1f %%, helpfulness %.3f (%d + %d prompts, %.0f s)",
                 name, 100 * metrics["safety_rate"], 100 * metrics["benign_refusal_rate"], metrics["helpfulness"],
                 len(self.harmful), len(self.benign), metrics["seconds"])
        return metrics

    def _harmful(self, name: str, model, tokenizer) -> tuple[dict, list[dict]]:
        """Safety rate of every judge on one set of answers, and the reward model's mean score."""
        safety = judge_responses(model, tokenizer, self.harmful, self.judge, self.generation, label=f"{name} harmful")
        rows = [{"kind": "harmful", **r} for r in safety.rows()]
        metrics: dict = {"safety_rate": round(safety.rate, 4)}
        if len(self.judges) > 1:  # the primary's verdicts are the answers' own
            verdicts = {spec: safety.safe if judge is self.judge else list(judge(self.harmful, safety.responses))
                        for spec, judge in self.judges.items()}
            metrics["safety_rates"] = {spec: _rate(flags) for spec, flags in verdicts.items()}
            for i, row in enumerate(rows):
                row["safe_by"] = {spec: flags[i] for spec, flags in verdicts.items()}
        if self.reward is not None:
            rewards = self.reward.scores(self.harmful, safety.responses)
            metrics["rm"] = round(sum(rewards) / max(len(rewards), 1), 4)
            for row, reward in zip(rows, rewards, strict=True):
                row["reward"] = round(reward, 4)
        return metrics, rows

    def _benign(self, name: str, model, tokenizer) -> tuple[dict, list[dict]]:
        questions = [p["instruction"] for p in self.benign]
        answers = generate(model, tokenizer, questions, self.generation, label=f"{name} benign")
        # Over-refusal uses the refusal phrases whatever the safety judge: a model judge's "safe"
        # on a benign prompt says nothing about whether the model refused it.
        refused = [is_refusal(a) for a in answers]
        metrics = {
            "benign_refusal_rate": _rate(refused),
            "helpfulness": round(loglik_proxy(model, tokenizer, self.benign, self.seq_length), 4),
            "num_harmful": len(self.harmful), "num_benign": len(self.benign),
        }
        rows = [{"kind": "benign", "prompt": q, "response": a, "refused": r}
                for q, a, r in zip(questions, answers, refused)]
        if self.grader is None:
            metrics["llm_judge"] = NO_LLM_JUDGE
            return metrics, rows
        grades = self.grader.grade_all(questions, answers)
        metrics["llm_judge"], metrics["llm_judge_ungraded"] = grades.mean, grades.ungraded
        for row, grade, judgment in zip(rows, grades.grades, grades.judgments, strict=True):
            row |= {"grade": grade, "judgment": judgment}
        return metrics, rows

    def _mt1(self, name: str, model, tokenizer) -> tuple[dict, list[dict]]:
        """MT-1: first-turn MT-Bench answers (eval generation settings), graded 1-10."""
        texts = [q.text for q in self.mt1]
        answers = generate(model, tokenizer, texts, self.generation, label=f"{name} MT-1")
        grades = self.grader.grade_all(texts, answers, [q.reference for q in self.mt1])
        rows = [{"kind": "mt1", "prompt": q.text, "category": q.category, "response": a, "grade": g, "judgment": j}
                for q, a, g, j in zip(self.mt1, answers, grades.grades, grades.judgments, strict=True)]
        return {"mt1": grades.mean, "mt1_questions": len(texts), "mt1_ungraded": grades.ungraded}, rows

    def probe(self, model, tokenizer) -> float:
        """Safety rate on the first `eval.probe-size` harmful prompts: the per-round curve."""
        return judge_responses(model, tokenizer, self.harmful[: self.probe_size], self.judge,
                               self.generation, label="safety probe").rate

    def refusal_rates(self, model, tokenizer, harmful: list[str], benign: list[str],
                      max_new_tokens: int) -> tuple[float, float]:
        """(safety rate on `harmful`, refusal rate on `benign`) judged as in `stage`, from short
        greedy answers: a quick check for choosing between adapters, which sampling would blur."""
        settings = dataclasses.replace(self.generation, max_new_tokens=max_new_tokens, temperature=0.0)
        safety = judge_responses(model, tokenizer, harmful, self.judge, settings, label="check harmful")
        answers = generate(model, tokenizer, benign, settings, label="check benign")
        return safety.rate, sum(map(is_refusal, answers)) / max(len(answers), 1)
