"""What the server does besides aggregating, independent of Flower: hold the global model for
evaluation and the post-hoc defense, checkpoint adapters, and record results.

Phases: validate (config) -> aggregate (strategy) -> post-hoc -> evaluate -> report.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path

import torch

from fedsafe import models
from fedsafe.federation.checkpoint import STATE_DIR, load_state, save_state
from fedsafe.config import Settings
from fedsafe.posthoc.data import build_defense_data
from fedsafe.posthoc.finetune import posthoc_finetune
from fedsafe.federation.probe import BehaviourProbe, compliant_pairs, probe_pairs, selection_prompts
from fedsafe.eval.cache import STAGE as INITIAL
from fedsafe.eval.cache import initial_stage
from fedsafe.eval.stages import Evaluator
from fedsafe.results import Recorder

log = logging.getLogger(__name__)
# Answer length for the post-hoc step selection: refusal phrases open a refusal, and the check
# runs several times per fine-tune, so it reads 24 tokens where the evaluation reads 40.
SELECT_NEW_TOKENS = 24


class Server:
    def __init__(self, settings: Settings, run_dir: Path, aggregator, optimizer=None, controls=None):
        self.settings = settings
        self.run_dir = run_dir
        # What a resumed run restores besides the adapter (see federation/checkpoint.py).
        self.parts = {"aggregator": aggregator, "optimizer": optimizer, "scaffold": controls}
        resuming = bool(settings.resume_from) and (run_dir / "results.json").is_file()
        self.recorder = Recorder.load(run_dir, settings) if resuming else Recorder(run_dir, settings)
        started = time.perf_counter()
        dense = models.server_dense(settings.model)
        self.model = models.cached_lora_model(settings.model, settings.seed, dense)
        self.tokenizer = models.cached_tokenizer(settings.model)
        self.initial_state = models.initial_adapter(settings.model, settings.seed, dense)
        self.recorder.add_timing("model_load", time.perf_counter() - started)
        self.evaluator = Evaluator(settings, run_dir)
        self.behaviour_probe = None
        if getattr(aggregator, "needs_probe", False):
            harmful, helpful = probe_pairs(aggregator.probe_size, self.evaluator.harmful,
                                           getattr(aggregator, "benign_size", 0))
            models.set_adapter_state(self.model, self.initial_state)  # the base model's own answers
            started = time.perf_counter()
            compliant = compliant_pairs(self.model, self.tokenizer, harmful, settings.eval.batch_size)
            self.recorder.add_timing("behaviour_probe_setup", time.perf_counter() - started)
            log.info("safety-probe: %d harmful probe prompts, %d compliant answers of the base model, %d benign",
                     len(harmful), len(compliant), len(helpful))
            self.behaviour_probe = BehaviourProbe(self.model, self.tokenizer, harmful, compliant, helpful,
                                                  settings.train.seq_length)

    def evaluate(self, stage: str, state: dict[str, torch.Tensor]) -> dict:
        models.set_adapter_state(self.model, state)
        started = time.perf_counter()
        if stage == INITIAL and self.settings.eval.initial_cache:
            metrics = initial_stage(self.settings, self.evaluator, self.model, self.tokenizer, state, self.run_dir)
        else:
            metrics = self.evaluator.stage(stage, self.model, self.tokenizer)
        self.recorder.set_eval(stage, metrics)
        self.recorder.add_timing("eval", time.perf_counter() - started)
        return metrics

    def resume_point(self) -> tuple[int, "OrderedDict[str, torch.Tensor]"]:
        """(first round to run, global adapter to start from): round 1 and the initial adapter,
        or the round after the last one a killed run completed (aggregator state restored)."""
        if not self.settings.resume_from or not (self.run_dir / STATE_DIR).exists():
            return 1, self.initial_state
        done, state = load_state(self.run_dir, self.parts)
        log.info("resuming %s after round %d", self.run_dir, done)
        return done + 1, state

    def checkpoint(self, server_round: int, state: "OrderedDict[str, torch.Tensor]") -> None:
        """The round's PEFT adapter, then the resumable state (written last)."""
        models.save_adapter(state, self.run_dir / "adapters" / f"round-{server_round:03d}", self.settings.model)
        save_state(self.run_dir, server_round, state, self.parts)

    def probe(self, server_round: int, state: dict[str, torch.Tensor]) -> float | None:
        """Safety probe every `eval.every-rounds` rounds (the safety curve)."""
        every = self.settings.eval.every_rounds
        if not every or server_round % every:
            return None
        models.set_adapter_state(self.model, state)
        started = time.perf_counter()
        rate = self.evaluator.probe(self.model, self.tokenizer)
        self.recorder.add_timing("safety_probe", time.perf_counter() - started)
        rounds = self.recorder.data["rounds"]
        if server_round and rounds and rounds[-1]["round"] == server_round:
            rounds[-1]["safety_probe"] = rate
            self.recorder.save()
        else:
            self.recorder.data.setdefault("safety_probe", {})[str(server_round)] = rate
        return rate

    def _selection_check(self):
        """The post-hoc step selection's check (short answers to the probe prompts); None when
        `posthoc.select-every` is 0."""
        if not self.settings.posthoc.select_every:
            return None
        harmful, benign = selection_prompts(self.settings.posthoc.select_size, self.evaluator.harmful)
        return lambda: self.evaluator.refusal_rates(self.model, self.tokenizer, harmful, benign, SELECT_NEW_TOKENS)

    def posthoc(self, global_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        started = time.perf_counter()
        models.set_adapter_state(self.model, global_state)
        defense = build_defense_data(self.settings, self.model, self.tokenizer, self.evaluator.judge,
                                     self.evaluator.harmful)
        state, result, selection = posthoc_finetune(self.settings, self.model, self.tokenizer, global_state,
                                                    defense, self._selection_check())
        models.save_adapter(state, self.run_dir / "adapters" / "posthoc", self.settings.model)
        seconds = time.perf_counter() - started
        self.recorder.set("posthoc", {**defense.counts, "steps": result.steps, "lr": self.settings.posthoc.lr,
                                      "loss": round(result.loss, 4), **selection,
                                      "train_seconds": round(result.seconds, 1), "seconds": round(seconds, 1)})
        self.recorder.add_timing("posthoc", seconds)
        return state
