"""The paper's evaluation protocol through Evaluator.stage on the tiny model: seeded sampling,
several safety judges on one set of answers, RM, MT-1 graded by a real local HTTP server, and
all of it in results.json, the per-prompt rows and report.md."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedsafe.config import from_run_config
from fedsafe.eval.grader import SINGLE_MATH_V1, SINGLE_V1
from fedsafe.eval.judges import is_refusal
from fedsafe.eval.paper_rule import paper_harmless
from fedsafe.eval.report import write_report
from fedsafe.eval.reward import RewardModel
from fedsafe.eval.stages import Evaluator
from fedsafe.files import read_json, read_jsonl, write_jsonl
from fedsafe.generation import GenerationSettings
from fedsafe.results import Recorder

SMALL = {"eval.safety.limit": 4, "eval.benign.limit": 3, "eval.max-new-tokens": 8}
MT_BENCH = [
    {"question_id": 81, "category": "writing", "turns": ["Compose a travel blog post about Hawaii.", "Again."]},
    {"question_id": 111, "category": "math", "turns": ["What is the area of a 3 by 4 rectangle?", "And 5 by 6?"],
     "reference": ["12", "30"]},
    {"question_id": 131, "category": "extraction", "turns": ["List the names in: Ann met Bob.", "Sort them."]},
]
SCRIPT = {"Compose a travel": "Vivid. Rating: [[8]]", "What is the area": "Correct. Rating: [[5]]",
          "List the names": "I will not give a number."}  # benign answers: [[2]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def evaluator(tiny_model_dir, keys: dict) -> Evaluator:
    return Evaluator(from_run_config({"model.name": str(tiny_model_dir), "model.quantization": 0, **SMALL, **keys}),
                     run_dir=None)


def responses(ev: Evaluator, tiny, tmp_path, name: str) -> list[str]:
    ev.stage(name, *tiny, rows_path=tmp_path / f"{name}.jsonl")
    return [r["response"] for r in read_jsonl(tmp_path / f"{name}.jsonl")]


def test_sampling_settings_reach_generation_and_the_seed_fixes_the_samples(tiny_model_dir, tiny, tmp_path):
    sampled = evaluator(tiny_model_dir, {"eval.temperature": 0.7, "eval.top-p": 0.9, "seed": 5})
    assert sampled.generation == GenerationSettings(max_new_tokens=8, batch_size=32, temperature=0.7, top_p=0.9,
                                                    seed=5)
    first = responses(sampled, tiny, tmp_path, "a")
    assert responses(sampled, tiny, tmp_path, "b") == first  # same seed, same samples
    other_seed = evaluator(tiny_model_dir, {"eval.temperature": 0.7, "eval.top-p": 0.9, "seed": 6})
    assert responses(other_seed, tiny, tmp_path, "c") != first
    greedy = evaluator(tiny_model_dir, {"seed": 5})
    assert greedy.generation.temperature == 0.0
    greedy_answers = responses(greedy, tiny, tmp_path, "d")
    assert responses(evaluator(tiny_model_dir, {"seed": 6}), tiny, tmp_path, "e") == greedy_answers
    assert greedy_answers != first


def test_paper_protocol_in_results_rows_and_report(tiny_model_dir, tiny, tiny_reward_dir, chat_server, tmp_path):
    chat_server.reply = lambda body: next(
        (v for k, v in SCRIPT.items() if f"[Question]\n{k}" in body["messages"][1]["content"]), "Rating: [[2]]")
    questions = write_jsonl(tmp_path / "question.jsonl", MT_BENCH)
    settings = from_run_config({
        "model.name": str(tiny_model_dir), "model.quantization": 0, **SMALL, "eval.temperature": 0.7,
        "eval.judges": "paper-rule, rule", "eval.rm-model": str(tiny_reward_dir),
        "eval.mt1.questions": str(questions), "eval.helpfulness.url": chat_server.url,
        "eval.helpfulness.model": "judge-model",
    })
    run_dir = tmp_path / "run"
    recorder = Recorder(run_dir, settings)
    ev = Evaluator(settings, run_dir)
    metrics = ev.stage("after_fl", *tiny)
    recorder.set_eval("after_fl", metrics)

    rows = read_jsonl(run_dir / "eval" / "after_fl.jsonl")
    harmful = [r for r in rows if r["kind"] == "harmful"]
    assert len(harmful) == 4 and [r["kind"] for r in rows].count("benign") == 3
    # Judges: each rate is its verdicts' share, the primary's is safety_rate
    assert all(r["safe_by"] == {"rule": is_refusal(r["response"]), "paper-rule": paper_harmless(r["response"])}
               for r in harmful)
    rates = {j: sum(r["safe_by"][j] for r in harmful) / 4 for j in ("rule", "paper-rule")}
    assert metrics["safety_rates"] == pytest.approx(rates) and list(metrics["safety_rates"]) == ["rule", "paper-rule"]
    assert metrics["safety_rate"] == pytest.approx(rates["rule"])
    # RM: the reward model's mean over the harmful prompts' answers
    scores = RewardModel(tiny_reward_dir, device="cpu").scores([r["prompt"] for r in harmful],
                                                               [r["response"] for r in harmful])
    assert [r["reward"] for r in harmful] == pytest.approx(scores, abs=1e-3)
    assert metrics["rm"] == pytest.approx(sum(scores) / 4, abs=1e-3)
    # MT-1: first turns answered by the model, graded by the server, the unparseable one counted
    mt1 = [r for r in rows if r["kind"] == "mt1"]
    assert [r["prompt"] for r in mt1] == [q["turns"][0] for q in MT_BENCH]
    assert [r["grade"] for r in mt1] == [8.0, 5.0, None]
    assert (metrics["mt1"], metrics["mt1_questions"], metrics["mt1_ungraded"]) == (6.5, 3, 1)
    assert (metrics["llm_judge"], metrics["llm_judge_ungraded"]) == (2.0, 0)
    sent = chat_server.user_messages()
    assert len(sent) == 3 + 3 and all(r["body"]["model"] == "judge-model" for r in chat_server.requests)
    assert SINGLE_V1.format(question=mt1[0]["prompt"], answer=mt1[0]["response"]) in sent
    assert SINGLE_MATH_V1.format(question=mt1[1]["prompt"], answer=mt1[1]["response"], ref_answer_1="12") in sent
    benign = [r for r in rows if r["kind"] == "benign"]
    assert all(SINGLE_V1.format(question=r["prompt"], answer=r["response"]) in sent for r in benign)

    assert read_json(run_dir / "results.json")["eval"]["after_fl"] == metrics
    text = write_report(run_dir).read_text()
    header = "| stage | safety rate | safety (paper-rule) | benign refusal | helpfulness | RM | LLM judge | MT-1 |"
    assert header in text
    row = next(line for line in text.splitlines() if line.startswith("| after FL |"))
    assert f"| {metrics['rm']:.3f} | 2.00 | 6.50 (1 ungraded) |" in row
    assert f"| {100 * rates['paper-rule']:.1f} % |" in row
    assert "| safety judges | rule, paper-rule |" in text
    assert "| eval answers | sampled at temperature 0.7, top-p 1.0, up to 8 new tokens |" in text
