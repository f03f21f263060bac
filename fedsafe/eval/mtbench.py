"""MT-Bench first-turn questions: the MT-1 metric of the paper this project studies.

The paper (Ye et al. 2024, arXiv 2406.10630) reports MT-1, the mean 1-10 grade of the first
answers to MT-Bench's 80 questions (Zheng et al. 2023, arXiv 2306.05685; FastChat's
question.jsonl). The model under test answers the first turn only; `grader.py` grades it.

Questions come from a .jsonl/.json/.csv file, a dataset folder or a Hub dataset id: the first
item of a `turns` list (FastChat's layout), else of the first prompt column present (prompt,
goal, instruction, question; a list there counts as turns, as in HuggingFaceH4/mt_bench_prompts).
FastChat grades math, reasoning and coding answers against a reference answer (the single-math-v1
prompt); a row's `reference` (its first item when a list) is kept for those categories. The
paper's references are GPT-4's answers (FastChat's reference_answer/gpt-4.jsonl), not the short
`reference` of question.jsonl: put those in the rows to grade exactly as the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsafe import data
from fedsafe.eval.safety import PROMPT_COLUMNS, prompt_column

# FastChat's categories graded with a reference answer (NEED_REF_CATS, less its arena-hard set).
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class Question:
    text: str
    category: str = ""
    reference: str | None = None  # the first turn's reference answer, for REFERENCE_CATEGORIES


def first_turn(value) -> str:
    """A turn list's first item, or the value itself."""
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def questions_from_rows(rows: list[dict], source: str) -> list[Question]:
    if not rows:
        raise ValueError(f"{source}: no rows")
    column = prompt_column(list(rows[0]), source, ("turns", *PROMPT_COLUMNS), "question")
    questions = []
    for row in rows:
        text = first_turn(row.get(column))
        if not text.strip():
            continue
        category = str(row.get("category") or "")
        reference = first_turn(row.get("reference")) if category in REFERENCE_CATEGORIES else ""
        questions.append(Question(text=text, category=category, reference=reference or None))
    if not questions:
        raise ValueError(f"{source}: every '{column}' value is empty")
    return questions


def load_questions(source: str) -> list[Question]:
    """MT-Bench questions from a file, a dataset folder or a Hub dataset id (see the docstring)."""
    return questions_from_rows(data.load_rows(source), source)
