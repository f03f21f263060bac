"""MT-Bench questions from FastChat's JSONL layout, prompt columns, a dataset folder; bad files
refused by the config in one line."""

import csv
import json

import pytest

from fedsafe.config import ConfigError, from_run_config
from fedsafe.eval.mtbench import Question, load_questions
from fedsafe.files import write_jsonl

FASTCHAT_ROWS = [  # question.jsonl's layout (two of its rows, shortened)
    {"question_id": 81, "category": "writing", "turns": ["Compose a travel blog post about Hawaii.", "Rewrite it."]},
    {"question_id": 101, "category": "reasoning", "turns": ["You overtake the second person. Your position?", "Last?"],
     "reference": ["You are in second place.", "Uncertain."]},
    {"question_id": 95, "category": "roleplay", "turns": ["Translate this.", "Again."], "reference": ["It means x."]},
]
GRADER = {"eval.helpfulness.url": "http://127.0.0.1:9/v1", "eval.helpfulness.model": "judge"}


def test_fastchat_layout_first_turns_and_references(tmp_path):
    path = write_jsonl(tmp_path / "question.jsonl", FASTCHAT_ROWS)
    assert load_questions(str(path)) == [
        Question("Compose a travel blog post about Hawaii.", "writing", None),
        Question("You overtake the second person. Your position?", "reasoning", "You are in second place."),
        Question("Translate this.", "roleplay", None),  # FastChat grades roleplay without its reference
    ]


def test_prompt_columns_csv_json_and_lists(tmp_path):
    with open(tmp_path / "q.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question"])
        writer.writeheader()
        writer.writerows([{"id": 1, "question": "Name a composer."}, {"id": 2, "question": " "}])
    assert load_questions(str(tmp_path / "q.csv")) == [Question("Name a composer.")]  # blank rows skipped
    # HuggingFaceH4/mt_bench_prompts keeps its turns in a `prompt` list
    (tmp_path / "q.json").write_text(json.dumps({"data": [{"prompt": ["First?", "Second?"], "category": "math",
                                                          "reference": ["42", "43"]}]}))
    assert load_questions(str(tmp_path / "q.json")) == [Question("First?", "math", "42")]


def test_a_dataset_folder_loads_as_a_hub_dataset(tmp_path):
    folder = tmp_path / "mt_bench"
    write_jsonl(folder / "train.jsonl", FASTCHAT_ROWS[:2])
    questions = load_questions(str(folder))
    assert [q.text for q in questions] == [r["turns"][0] for r in FASTCHAT_ROWS[:2]]
    assert from_run_config({"eval.mt1.questions": str(folder), **GRADER}).eval.mt1.questions == str(folder)


def test_config_checks_the_questions_file(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", FASTCHAT_ROWS)
    assert from_run_config({"eval.mt1.questions": str(good), **GRADER}).eval.mt1.questions == str(good)
    assert from_run_config({"eval.mt1.questions": "HuggingFaceH4/mt_bench_prompts", **GRADER}).eval.mt1.questions
    bad = {
        "missing": tmp_path / "missing.jsonl",
        "no column": write_jsonl(tmp_path / "answers.jsonl", [{"answer": "x"}]),
        "empty turns": write_jsonl(tmp_path / "empty.jsonl", [{"turns": []}]),
        "no rows": write_jsonl(tmp_path / "none.jsonl", []),
        "not a source": "no such questions",
    }
    for why, path in bad.items():
        with pytest.raises(ConfigError, match=r"^eval\.mt1\.questions=") as err:
            from_run_config({"eval.mt1.questions": str(path), **GRADER})
        assert "\n" not in str(err.value), why
    with pytest.raises(ConfigError, match=r"^eval\.mt1\.questions=.*eval\.helpfulness\.url"):
        from_run_config({"eval.mt1.questions": str(good)})  # no grader
