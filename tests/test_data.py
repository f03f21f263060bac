"""Bundled data, loaders, chat formatting, completion-only labels, partitioning."""

import csv
import json
from collections import Counter

import pytest

from fedsafe import data
from fedsafe.files import read_jsonl, write_jsonl

SPLITS = ("train", "eval", "probe")


def _rows(kind, split):
    return read_jsonl(data.bundled_path(f"{kind}_{split}"))


def test_bundled_sizes_and_coverage():
    helpful, harmful = _rows("helpful", "train"), _rows("harmful", "train")
    assert len(helpful) >= 200 and len({r["task"] for r in helpful}) >= 10
    assert len(harmful) >= 150 and len({r["category"] for r in harmful}) >= 10
    assert len(_rows("helpful", "eval")) >= 50 and len(_rows("harmful", "eval")) >= 50


def test_eval_and_probe_never_overlap_training():
    seen = Counter()
    for kind in ("helpful", "harmful", "borderline"):
        for split in SPLITS if kind != "borderline" else ("train", "probe"):
            seen.update({r["instruction"].strip().lower() for r in _rows(kind, split)})
    assert [k for k, n in seen.items() if n > 1] == []


def test_refusal_targets_are_refusals():
    from fedsafe.eval.judges import is_refusal

    assert all(is_refusal(r["response"]) for r in _rows("harmful", "train"))
    for kind, split in (("helpful", "train"), ("borderline", "train"), ("borderline", "probe")):
        assert not any(is_refusal(r["response"]) for r in _rows(kind, split)), (kind, split)


def test_borderline_pairs_are_short_and_stay_off_the_eval_topics():
    """Borderline defense/probe pairs fit the training length like every other file, and none is
    a near-copy of a held-out prompt (the eval's own borderline rows measure over-refusal)."""
    from fedsafe.attacks.generate import words

    held_out = [words(r["instruction"]) for kind in ("helpful", "harmful") for r in _rows(kind, "eval")]
    for split in ("train", "probe"):
        for row in _rows("borderline", split):
            assert len(row["instruction"].split()) < 30 and len(row["response"].split()) < 60, row
            w = words(row["instruction"])
            assert max(len(w & e) / len(w | e) for e in held_out) < 0.5, row["instruction"]


def test_loaders_map_columns(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"q": "Say hi.", "a": "Hi!"}])
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"instruction": "Add 2 and 2.", "input": "", "output": "4"}]}))
    with open(tmp_path / "c.csv", "w", newline="") as f:
        csv.writer(f).writerows([["instruction", "response"], ["Name a color.", "Blue."]])
    write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "Hello?"},
                                                     {"role": "assistant", "content": "Hello!"}]}])
    assert data.load_pairs(str(tmp_path / "a.jsonl"), "q", "a") == [{"instruction": "Say hi.", "response": "Hi!"}]
    assert data.load_pairs(str(tmp_path / "b.json"), "instruction", "output")[0]["response"] == "4"
    assert data.load_pairs(str(tmp_path / "c.csv"))[0]["instruction"] == "Name a color."
    assert data.load_pairs(str(tmp_path / "d.jsonl")) == [{"instruction": "Hello?", "response": "Hello!"}]
    with pytest.raises(ValueError, match="data.instruction-column"):
        data.load_pairs(str(tmp_path / "a.jsonl"))


def test_hub_code_path_on_a_local_dataset_folder(tmp_path):
    """`datasets.load_dataset` is the Hub path; a local folder exercises it offline."""
    folder = tmp_path / "alpaca-like"
    write_jsonl(folder / "train.jsonl", [{"instruction": f"Count to {i}.", "input": "", "output": "1"} for i in range(5)])
    pairs = data.load_pairs(str(folder), "instruction", "output")
    assert len(pairs) == 5 and pairs[0]["response"] == "1"


def test_partition_is_deterministic_iid_and_complete():
    pairs = [data.Pair(instruction=str(i), response="x") for i in range(103)]
    a, b = data.partition(pairs, 10, seed=1), data.partition(pairs, 10, seed=1)
    assert a == b
    assert sorted(p["instruction"] for part in a for p in part) == sorted(p["instruction"] for p in pairs)
    assert {len(p) for p in a} <= {10, 11}
    assert data.partition(pairs, 10, seed=2) != a


def test_completion_only_labels(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pair = data.Pair(instruction="What is the capital of France?", response="The capital of France is Paris.")
    (ex,) = data.tokenize_pairs(tok, [pair], seq_length=256)
    prompt_len = len(tok(data.chat_prompt(tok, pair["instruction"]), add_special_tokens=False)["input_ids"])
    assert ex["labels"][:prompt_len] == [data.IGNORE_INDEX] * prompt_len
    answer = tok.decode([t for t in ex["labels"] if t != data.IGNORE_INDEX])
    assert answer.startswith("The capital of France is Paris.") and answer.endswith("<|im_end|>")
    assert data.chat_prompt(tok, "hi").endswith("<|im_start|>assistant\n")


def test_truncation_keeps_response_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = data.Pair(instruction="word " * 300, response="Short answer here.")
    (ex,) = data.tokenize_pairs(tok, [long], seq_length=64)
    assert len(ex["input_ids"]) <= 64 and any(t != data.IGNORE_INDEX for t in ex["labels"])
