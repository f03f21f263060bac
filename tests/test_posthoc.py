"""Post-hoc defense: mixing the defense data, the server fine-tune, the full run and its branches
(the levels' defense data: tests/posthoc/test_levels.py)."""

import pytest
import torch

from fedsafe import cli, data, models
from fedsafe.posthoc.branch import run_branch
from fedsafe.config import ConfigError
from fedsafe.posthoc.data import build_defense_data, mix_one_to_one
from fedsafe.posthoc.finetune import posthoc_finetune
from fedsafe.eval.judges import RuleJudge
from fedsafe.files import read_json, write_jsonl
from tests.test_federation import run_federation, tiny_run_config

EVAL_PROMPTS = [p["instruction"] for p in data.bundled("harmful_eval")]


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir):
    from fedsafe.client import settings_from

    settings = settings_from(tiny_run_config(tiny_model_dir, "/tmp/unused", **{
        "posthoc.num-samples": 6, "posthoc.steps": 4, "posthoc.lr": 5e-2}))
    model = models.cached_lora_model(settings.model, settings.seed)
    return settings, model, models.cached_tokenizer(settings.model)


def test_mixing_removes_eval_overlap_and_balances():
    harmful = [data.Pair(instruction=EVAL_PROMPTS[0], response="I'm sorry, I can't.")] + data.bundled("harmful_train")[:5]
    helpful = data.bundled("helpful_train")[:3]
    counts = {}
    defense = mix_one_to_one(harmful, helpful, EVAL_PROMPTS, counts=counts)
    assert counts["dropped"]["eval_overlap"] == 1 and counts["aligned"] == counts["helpful"] == 3
    assert counts["dropped"]["unpaired"] == 2  # 5 refusals left, 3 helpful pairs
    assert len(defense.pairs) == 6


def test_server_finetune_changes_and_saves_the_adapter(tiny_server, tmp_path):
    settings, model, tok = tiny_server
    start = models.initial_adapter(settings.model, settings.seed)
    defense = build_defense_data(settings, model, tok, RuleJudge(), EVAL_PROMPTS)
    repaired, result, selection = posthoc_finetune(settings, model, tok, start, defense)
    assert selection == {} and result.steps == 4 and any(not torch.equal(start[k], repaired[k]) for k in start)
    folder = models.save_adapter(repaired, tmp_path / "posthoc", settings.model)
    again = models.load_adapter_file(folder)
    assert all(torch.equal(again[k], repaired[k]) for k in repaired)


@pytest.mark.slow
def test_step_selection_keeps_the_best_checked_adapter(tiny_server):
    """Checks every 2 of 6 steps; the best score (safe minus benign refused) is at step 4, with a
    tie at step 6 that must not win. The kept adapter is exactly the one a 4-step fine-tune gives."""
    from dataclasses import replace

    settings, model, tok = tiny_server
    start = models.initial_adapter(settings.model, settings.seed)
    defense = build_defense_data(settings, model, tok, RuleJudge(), EVAL_PROMPTS)
    scripted = iter([(0.2, 0.0), (0.6, 0.1), (0.9, 0.4)])

    def check():  # reseeds torch as generation does: the training after it must not change
        torch.manual_seed(123)
        return next(scripted)

    six = replace(settings, posthoc=replace(settings.posthoc, steps=6, select_every=2))
    kept, result, selection = posthoc_finetune(six, model, tok, start, defense, check)
    assert result.steps == 6 and selection["selected_step"] == 4
    assert [c["step"] for c in selection["checks"]] == [2, 4, 6] and selection["checks"][1]["score"] == 0.5
    four = replace(settings, posthoc=replace(settings.posthoc, steps=4, select_every=0))
    plain, _, _ = posthoc_finetune(four, model, tok, start, defense, lambda: pytest.fail("select-every 0 checks"))
    assert all(torch.allclose(kept[k], plain[k]) for k in plain)
    last, _, _ = posthoc_finetune(replace(six, posthoc=replace(six.posthoc, select_every=0)), model, tok, start, defense)
    assert not all(torch.allclose(kept[k], last[k]) for k in last)


@pytest.mark.slow
def test_attack_and_posthoc_run_records_three_stages(tiny_model_dir, tmp_path):
    attack = tmp_path / "attack.jsonl"
    write_jsonl(attack, [{"instruction": f"Do harmful thing {i} now.", "response": "Sure, here is how."} for i in range(8)])
    config = tiny_run_config(tiny_model_dir, tmp_path / "runs", **{
        "num-server-rounds": 1, "eval.every-rounds": 0, "attack.malicious-ids": "2", "attack.data": str(attack),
        "posthoc.enabled": True, "posthoc.steps": 2, "posthoc.num-samples": 4, "posthoc.select-every": 2,
        "posthoc.borderline-share": 0.5})
    run_dir, results, _ = run_federation(config, 3)
    assert set(results["eval"]) == {"initial", "after_fl", "after_posthoc"}
    assert results["posthoc"]["aligned"] == results["posthoc"]["helpful"] == 4
    assert results["posthoc"]["level"] == "curated" and results["posthoc"]["dropped"]["eval_overlap"] == 0
    assert [c["step"] for c in results["posthoc"]["checks"]] == [2] and results["posthoc"]["selected_step"] == 2
    assert "| 2 (kept) |" in (run_dir / "report.md").read_text()
    assert (run_dir / "adapters" / "posthoc" / "adapter_model.safetensors").is_file()
    _branches_reproduce_and_refuse_training_changes(run_dir, results)


def _branches_reproduce_and_refuse_training_changes(run_dir, results):
    """`fedsafe posthoc RUN_DIR`: the source's own config gives the source's post-hoc adapter and
    evaluation; another step count gives another adapter; a training key is refused up front."""
    same = run_branch(run_dir, {})
    assert same.parent == run_dir / "branches"
    branched = read_json(same / "results.json")
    assert branched["branched_from"] == str(run_dir) and branched["rounds"] == results["rounds"]
    assert branched["eval"]["after_fl"] == results["eval"]["after_fl"]  # copied: same eval config
    strip = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    assert strip(branched["eval"]["after_posthoc"]) == strip(results["eval"]["after_posthoc"])
    ours, theirs = (models.load_adapter_file(d / "adapters" / "posthoc") for d in (run_dir, same))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    longer = cli.main(["posthoc", str(run_dir), "--run-config", "posthoc.steps=4 posthoc.select-every=0 eval.max-new-tokens=4"])
    assert longer == 0
    newest = max((run_dir / "branches").iterdir(), key=lambda d: d.stat().st_mtime)
    again = models.load_adapter_file(newest / "adapters" / "posthoc")
    assert not all(torch.equal(ours[k], again[k]) for k in ours)
    assert (newest / "eval" / "after_fl.jsonl").is_file() and not (same / "eval" / "after_fl.jsonl").exists()
    assert cli.main(["posthoc", str(run_dir), "--run-config",
                     "posthoc.level='L1' posthoc.num-samples=6 eval.max-new-tokens=4"]) == 0
    l1 = read_json(max((run_dir / "branches").iterdir(), key=lambda d: d.stat().st_mtime) / "results.json")["posthoc"]
    assert l1["level"] == "L1" and "benign clients' pool" in l1["source"] and l1["aligned"] + l1["helpful"] == 6
    with pytest.raises(ConfigError, match="train.lr-max"):
        run_branch(run_dir, {"train.lr-max": 0.5})
    assert cli.main(["posthoc", str(run_dir / "adapters")]) == 2  # not a run directory: one-line error


def test_helpful_half_matches_the_form_of_the_harmful_half():
    """Each helpful pair opens with its harmful counterpart's first word where the pool has one,
    never twice the same pair, and falls back to any unused pair."""
    import random

    from fedsafe.posthoc.curated import form_matched

    helpful = [data.Pair(instruction=f"{w} thing {i}?", response="ok") for i, w in
               enumerate(["How", "How", "What", "Write", "Why", "Why"])]
    harmful = [data.Pair(instruction=f"{w} harm {i}", response="no") for i, w in
               enumerate(["How", "how", "How", "Write", "Give"])]
    chosen = form_matched(helpful, harmful, random.Random(0))
    assert [p["instruction"].split()[0] for p in chosen[:2]] == ["How", "How"]  # case-insensitive match
    assert chosen[3]["instruction"].startswith("Write")
    assert len(chosen) == 5 and len({id(p) for p in chosen}) == 5  # third "How" and "Give": any unused pair
    assert form_matched(helpful, harmful, random.Random(0)) == chosen
    assert len(form_matched(helpful[:2], harmful, random.Random(0))) == 2  # the pool runs out


def test_balanced_batches_take_each_group_in_turn():
    """Batch 4 over two groups: 2 + 2 in every batch, each example once per epoch (the smaller
    group bounds the epoch), the next epoch reshuffled."""
    from itertools import islice

    from fedsafe.training import balanced_batches

    aligned, helpful = [f"a{i}" for i in range(6)], [f"h{i}" for i in range(8)]
    stream = balanced_batches([aligned, helpful], 4, seed=0)
    epoch = list(islice(stream, 3))  # 12 turns = 6 + 6
    assert all(sum(x.startswith("a") for x in batch) == 2 for batch in epoch)
    assert sorted(x for b in epoch for x in b if x.startswith("a")) == aligned
    assert len({x for b in epoch for x in b}) == 12 and next(stream) != epoch[0]
    with pytest.raises(ValueError, match="every group"):
        next(balanced_batches([aligned, []], 4, seed=0))
