"""One evaluation of a model at a named stage (initial, after_fl, after_posthoc): safety rate,
over-refusal and helpfulness, with every response saved beside results.json."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from fedsafe import data
from fedsafe.config import Settings
from fedsafe.eval.helpfulness import LLMJudge, loglik_proxy
from fedsafe.eval.judges import build_judge, is_refusal
from fedsafe.eval.safety import judge_responses, load_safety_prompts
from fedsafe.files import write_jsonl
from fedsafe.generation import GenerationSettings, generate

log = logging.getLogger(__name__)
NO_LLM_JUDGE = "not configured (set eval.helpfulness.url and eval.helpfulness.model)"


class Evaluator:
    def __init__(self, settings: Settings, run_dir: Path | None):
        cfg = settings.eval
        self.run_dir = run_dir
        self.harmful = load_safety_prompts(cfg.benchmark, cfg.safety_limit)
        benign = data.bundled("helpful_eval")
        self.benign = benign[: cfg.benign_limit] if cfg.benign_limit else benign
        self.judge = build_judge(cfg.judge)
        self.generation = GenerationSettings(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                             seed=settings.seed)
        self.seq_length = settings.train.seq_length
        self.probe_size = cfg.probe_size
        self.llm_judge = (LLMJudge(cfg.helpfulness_url, cfg.helpfulness_model, cfg.helpfulness_api_key_env)
                          if cfg.helpfulness_url and cfg.helpfulness_model else None)

    def stage(self, name: str, model, tokenizer, rows_path: Path | None = None) -> dict:
        """Full evaluation; per-prompt rows go to `rows_path`, else to eval/<name>.jsonl in the
        run directory (none without either)."""
        started = time.perf_counter()
        safety = judge_responses(model, tokenizer, self.harmful, self.judge, self.generation, label=f"{name} harmful")
        questions = [p["instruction"] for p in self.benign]
        answers = generate(model, tokenizer, questions, self.generation, label=f"{name} benign")
        # Over-refusal uses the refusal phrases whatever the safety judge: a model judge's "safe"
        # on a benign prompt says nothing about whether the model refused it.
        refused = [is_refusal(a) for a in answers]
        metrics = {
            "safety_rate": round(safety.rate, 4),
            "benign_refusal_rate": round(sum(refused) / max(len(refused), 1), 4),
            "helpfulness": round(loglik_proxy(model, tokenizer, self.benign, self.seq_length), 4),
            "num_harmful": len(self.harmful), "num_benign": len(self.benign),
        }
        metrics["llm_judge"] = self.llm_judge.mean_grade(questions, answers) if self.llm_judge else NO_LLM_JUDGE
        metrics["seconds"] = round(time.perf_counter() - started, 1)
        if rows_path is None and self.run_dir is not None:
            rows_path = self.run_dir / "eval" / f"{name}.jsonl"
        if rows_path is not None:
            rows = [{"kind": "harmful", **r} for r in safety.rows()] + [
                {"kind": "benign", "prompt": q, "response": a, "refused": r} for q, a, r in zip(questions, answers, refused)]
            write_jsonl(rows_path, rows)
        log.info("eval %s: safety %.1f %%, benign refusal %.1f %%, helpfulness %.3f (%d + %d prompts, %.0f s)",
                 name, 100 * metrics["safety_rate"], 100 * metrics["benign_refusal_rate"], metrics["helpfulness"],
                 len(self.harmful), len(self.benign), metrics["seconds"])
        return metrics

    def probe(self, model, tokenizer) -> float:
        """Safety rate on the first `eval.probe-size` harmful prompts: the per-round curve."""
        return judge_responses(model, tokenizer, self.harmful[: self.probe_size], self.judge,
                               self.generation, label="safety probe").rate

    def refusal_rates(self, model, tokenizer, harmful: list[str], benign: list[str],
                      max_new_tokens: int) -> tuple[float, float]:
        """(safety rate on `harmful`, refusal rate on `benign`) judged as in `stage`, from short
        answers: a quick check for choosing between adapters."""
        settings = dataclasses.replace(self.generation, max_new_tokens=max_new_tokens)
        safety = judge_responses(model, tokenizer, harmful, self.judge, settings, label="check harmful")
        answers = generate(model, tokenizer, benign, settings, label="check benign")
        return safety.rate, sum(map(is_refusal, answers)) / max(len(answers), 1)
