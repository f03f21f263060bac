"""Defense data at each post-hoc level: curated (fedsafe's, the default), L1 (a seeded sample of
public chat data), L2 (an external aligned model writes it), L3 (the global model writes it)."""

import json

import pytest
import torch

from fedsafe import data, models
from fedsafe.client import settings_from
from fedsafe.config import ConfigError, from_run_config
from fedsafe.eval.judges import is_refusal
from fedsafe.files import write_jsonl
from fedsafe.posthoc.branch import branch_settings
from fedsafe.posthoc.data import build_defense_data
from fedsafe.posthoc.finetune import posthoc_finetune
from tests.test_federation import tiny_run_config

EVAL = [p["instruction"] for p in data.bundled("harmful_eval")]
BUNDLED = {p["instruction"] for name in ("harmful_train", "helpful_train", "borderline_train") for p in data.bundled(name)}


def accept_all(prompts, responses):
    """Rates every response safe: lets the tiny random model's text through."""
    return [True] * len(responses)


def reject_all(prompts, responses):
    """Rates every response unsafe."""
    return [False] * len(responses)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """settings(**overrides) for the tiny model, and the server's model and tokenizer."""
    def settings(**overrides):
        return settings_from(tiny_run_config(tiny_model_dir, "/tmp/unused", **{
            "model.quantization": 0, "posthoc.num-samples": 6, **overrides}))

    base = settings()
    return settings, models.cached_lora_model(base.model, base.seed), models.cached_tokenizer(base.model)


def _disjoint_and_unique(defense):
    instructions = [p["instruction"] for p in defense.pairs]
    assert len(set(instructions)) == len(instructions) and not set(instructions) & set(EVAL)


def test_curated_is_the_default_level_balanced_and_seeded(tiny):
    settings, model, tok = tiny
    assert from_run_config({}).posthoc.level == "curated"
    defense = build_defense_data(settings(), model, tok, accept_all, EVAL)
    harmful = {p["instruction"]: p["response"] for p in data.bundled("harmful_train")}
    assert all(harmful.get(p["instruction"]) == p["response"] for p in defense.aligned)  # bundled refusals
    assert {p["instruction"] for p in defense.helpful} <= {p["instruction"] for p in data.bundled("helpful_train")}
    assert defense.balanced and defense.counts["aligned"] == defense.counts["helpful"] == len(defense.aligned) == 6
    assert defense.counts["level"] == "curated" and "bundled" in defense.counts["source"]
    _disjoint_and_unique(defense)
    assert build_defense_data(settings(), model, tok, accept_all, EVAL).pairs == defense.pairs
    assert build_defense_data(settings(seed=1), model, tok, accept_all, EVAL).pairs != defense.pairs


def _chat_file(path):
    """Public chat rows (messages layout): 30 helpful, 6 refusals, a near-duplicate, an eval prompt."""
    helpful, harmful = data.bundled("helpful_train")[:30], data.bundled("harmful_train")[:6]
    near = {**helpful[0], "instruction": helpful[0]["instruction"] + " Please"}
    rows = [{"messages": [{"role": "user", "content": p["instruction"]}, {"role": "assistant", "content": p["response"]}]}
            for p in [*helpful, *harmful, near, {"instruction": EVAL[0], "response": "Sure."}]]
    write_jsonl(path, rows)
    return helpful, harmful


def test_l1_samples_public_chat_data_with_the_seed(tiny, tmp_path):
    settings, model, tok = tiny
    source = tmp_path / "chat.jsonl"
    helpful, harmful = _chat_file(source)
    every = build_defense_data(settings(**{"posthoc.level": "L1", "posthoc.l1-source": str(source),
                                           "posthoc.num-samples": 100}), model, tok, accept_all, EVAL)
    assert not every.balanced and every.counts["source"] == str(source) and every.counts["available"] == 38
    assert every.counts["dropped"] == {"duplicate": 1, "eval_overlap": 1}
    assert sorted(p["instruction"] for p in every.aligned) == sorted(p["instruction"] for p in harmful)  # refusals
    assert len(every.helpful) == every.counts["helpful"] == 30 and every.counts["aligned"] == 6

    config = {"posthoc.level": "L1", "posthoc.l1-source": str(source), "posthoc.num-samples": 12}
    sample = build_defense_data(settings(**config), model, tok, accept_all, EVAL)
    assert len(sample.pairs) == 12 and all(is_refusal(p["response"]) for p in sample.aligned)
    assert not any(is_refusal(p["response"]) for p in sample.helpful)
    _disjoint_and_unique(sample)
    assert build_defense_data(settings(**config), model, tok, accept_all, EVAL).pairs == sample.pairs
    assert build_defense_data(settings(**config, seed=1), model, tok, accept_all, EVAL).pairs != sample.pairs


def test_l1_defaults_to_the_benign_clients_pool_and_trains_on_plain_batches(tiny):
    """With no refusal in the pool (data.aligned-pairs=0) there is no aligned half to balance
    against: L1 still fine-tunes, on shuffled batches of its sample."""
    settings, model, tok = tiny
    s = settings(**{"posthoc.level": "L1", "data.aligned-pairs": 0, "posthoc.steps": 2, "posthoc.lr": 5e-2})
    defense = build_defense_data(s, model, tok, accept_all, EVAL)
    assert "benign clients' pool" in defense.counts["source"] and defense.counts["available"] == 240
    assert defense.aligned == [] and len(defense.helpful) == 6 and s.posthoc.lr == 5e-2
    start = models.initial_adapter(s.model, s.seed)
    repaired, result, _ = posthoc_finetune(s, model, tok, start, defense)
    assert result.steps == 2 and any(not torch.equal(start[k], repaired[k]) for k in start)


def _generated_checks(defense, n):
    assert defense.balanced and defense.counts["aligned"] == defense.counts["helpful"] == len(defense.aligned) > 0
    assert len(defense.aligned) <= n and not {p["instruction"] for p in defense.pairs} & BUNDLED  # model-written
    assert {"harmful_missing_instruction", "everyday_missing_instruction", "refused_instruction", "unsafe_response",
            "refused_or_empty_answer", "eval_overlap", "unpaired"} <= set(defense.counts["dropped"])
    _disjoint_and_unique(defense)


def test_l2_is_written_by_an_external_generator_folder(tiny, second_tiny_model_dir):
    settings, model, tok = tiny
    s = settings(**{"posthoc.level": "L2", "posthoc.generator": str(second_tiny_model_dir)})
    before = models.adapter_state(model)
    defense = build_defense_data(s, model, tok, accept_all, EVAL)
    _generated_checks(defense, 6)
    assert defense.counts["source"] == f"generated by {second_tiny_model_dir}"
    assert all(torch.equal(before[k], v) for k, v in models.adapter_state(model).items())
    assert build_defense_data(s, model, tok, accept_all, EVAL).pairs == defense.pairs  # seeded
    own = build_defense_data(settings(**{"posthoc.level": "L2"}), model, tok, accept_all, EVAL)  # generator 'base'
    assert "adapter off" in own.counts["source"] and own.pairs != defense.pairs

    written = defense.counts["generated"]["harmful_instructions"]
    with pytest.raises(ValueError, match=rf"^posthoc.level='L2': no defense pairs left .*'unsafe_response': {written},"):
        build_defense_data(s, model, tok, reject_all, EVAL)  # what the judge rejects is dropped, and counted


def test_l3_is_written_by_the_global_model_with_its_adapter(tiny):
    settings, model, tok = tiny
    torch.manual_seed(5)
    trained = {k: torch.randn_like(v) * 0.5 for k, v in models.adapter_state(model).items()}
    models.set_adapter_state(model, trained)  # the server holds the global adapter when post-hoc runs
    l3 = build_defense_data(settings(**{"posthoc.level": "L3"}), model, tok, accept_all, EVAL)
    _generated_checks(l3, 6)
    assert l3.counts["source"] == "generated by the global model"
    off = build_defense_data(settings(**{"posthoc.level": "L2"}), model, tok, accept_all, EVAL)  # adapter off
    assert off.pairs != l3.pairs
    assert all(torch.equal(trained[k], v) for k, v in models.adapter_state(model).items())


@pytest.mark.parametrize("override,key", [
    ({"posthoc.level": "L4"}, "posthoc.level='L4': expected one of 'curated', 'L1', 'L2', 'L3'"),
    ({"posthoc.level": "l1"}, "posthoc.level"),
    ({"posthoc.l1-source": "/missing/chat.jsonl"}, "posthoc.l1-source='/missing/chat.jsonl': expected an existing file"),
    ({"posthoc.l1-source": "not a source"}, "posthoc.l1-source"),
    ({"posthoc.generator": "/missing/model"}, "posthoc.generator"),
])
def test_bad_posthoc_keys_fail_in_one_line(override, key):
    with pytest.raises(ConfigError) as err:
        from_run_config(override)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_learning_rate_by_level():
    lrs = {level: from_run_config({"posthoc.level": level}).posthoc.lr for level in ("curated", "L1", "L2", "L3")}
    assert lrs == {"curated": 2e-4, "L1": 2e-4, "L2": 1e-4, "L3": 1e-4}
    assert from_run_config({"posthoc.level": "L2", "posthoc.lr": 3e-4}).posthoc.lr == 3e-4


def test_branches_of_runs_before_the_levels_keep_their_defense_data(tmp_path):
    """A run recorded before the paper's levels has no posthoc.l1-source and called the curated
    set L1: branching it with its own config reproduces curated, not the new L1."""
    (tmp_path / "results.json").write_text(json.dumps({"rounds": [{"round": 1}]}))
    old = {"num-server-rounds": 1, "posthoc.level": "L1"}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert branch_settings(tmp_path, {})[0].posthoc.level == "curated"
    assert branch_settings(tmp_path, {"posthoc.level": "L1"})[0].posthoc.level == "L1"
    (tmp_path / "config.json").write_text(json.dumps({**old, "posthoc.l1-source": ""}))
    assert branch_settings(tmp_path, {})[0].posthoc.level == "L1"
