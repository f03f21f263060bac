"""`fedsafe compare`: paired differences of two evaluations, from their per-prompt rows."""

import pytest

from fedsafe.cli import main
from fedsafe.eval.compare import CompareError, compare, paired_difference
from fedsafe.files import write_jsonl


def rows(safe: list[bool], refused: list[bool]) -> list[dict]:
    harmful = [{"kind": "harmful", "prompt": f"harmful {i}", "response": "...", "safe": s} for i, s in enumerate(safe)]
    benign = [{"kind": "benign", "prompt": f"benign {i}", "response": "...", "refused": r}
              for i, r in enumerate(refused)]
    return harmful + benign


def run_dir(tmp_path, name, safe, refused, stage="after_fl"):
    write_jsonl(tmp_path / name / "eval" / f"{stage}.jsonl", rows(safe, refused))
    return tmp_path / name


def test_counts_the_prompts_that_changed_sides(tmp_path):
    a = run_dir(tmp_path, "a", [True] * 7 + [False] * 3, [True, False, False, False])
    b = run_dir(tmp_path, "b", [True] * 4 + [False] * 3 + [True, False, False], [True, True, False, False])
    safety, refusal = compare(a, b)
    assert (safety.prompts, safety.rate_a, safety.rate_b) == (10, 0.7, 0.5)
    assert (safety.only_a, safety.only_b) == (3, 1)
    assert safety.difference == pytest.approx(-0.2)
    assert safety.low < -0.2 < safety.high
    assert (refusal.prompts, refusal.only_a, refusal.only_b) == (4, 0, 1)
    assert refusal.difference == pytest.approx(0.25)


def test_the_bootstrap_interval_matches_the_normal_one_on_many_prompts():
    # 100 prompts: 20 safe only in A, 10 only in B. Mean difference -0.1, standard error
    # sqrt((0.3 - 0.01) / 100) = 0.0539, so about [-0.206, +0.006].
    a = [True] * 20 + [False] * 10 + [True] * 40 + [False] * 30
    b = [False] * 20 + [True] * 10 + [True] * 40 + [False] * 30
    result = paired_difference(a, b, "safety rate")
    assert result.difference == pytest.approx(-0.1)
    assert result.low == pytest.approx(-0.206, abs=0.02) and result.high == pytest.approx(0.006, abs=0.02)
    assert paired_difference(a, b, "safety rate") == result  # seeded
    same = paired_difference(a, a, "safety rate")
    assert (same.difference, same.low, same.high, same.only_a, same.only_b) == (0, 0, 0, 0, 0)


def test_evaluations_of_other_prompts_are_refused(tmp_path):
    a = run_dir(tmp_path, "a", [True, False], [])
    write_jsonl(tmp_path / "b.jsonl", rows([True, False, True], []))
    with pytest.raises(CompareError, match=r"b\.jsonl: 1 harmful prompts are in only one"):
        compare(a, tmp_path / "b.jsonl")


@pytest.mark.parametrize("text", ["not json\n", '{"kind": "harmful", "prompt": "p"}\n', "[1, 2]\n"])
def test_rows_of_another_shape_are_refused_by_name(tmp_path, text):
    a = run_dir(tmp_path, "a", [True], [])
    (tmp_path / "b.jsonl").write_text(text)
    with pytest.raises(CompareError, match=r"b\.jsonl: not per-prompt evaluation rows"):
        compare(a, tmp_path / "b.jsonl")


def test_a_rows_file_and_another_stage(tmp_path):
    a = run_dir(tmp_path, "a", [True, True], [False], stage="after_posthoc")
    write_jsonl(tmp_path / "b.jsonl", rows([True, False], [True]))
    safety, refusal = compare(a, tmp_path / "b.jsonl", stage="after_posthoc")
    assert (safety.only_a, refusal.only_b) == (1, 1)


def test_cli_prints_the_table_or_one_line_error(tmp_path, capsys):
    a = run_dir(tmp_path, "a", [True] * 3 + [False], [False] * 4)
    b = run_dir(tmp_path, "b", [True] * 2 + [False] * 2, [False] * 4)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| safety rate | 4 | 75.0 % | 50.0 % | -25.0 | 1 | 0 |" in out
    assert "| benign refusal | 4 | 0.0 % | 0.0 % | +0.0 | 0 | 0 | [+0.0, +0.0] |" in out
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsafe: error: ") and "missing: no per-prompt rows" in err and len(err.splitlines()) == 1
