"""1-10 grading of answers by an LLM behind an OpenAI-compatible chat-completions endpoint.

The prompts and the rating parser are FastChat's MT-Bench single-answer grading (Zheng et al.
2023, arXiv 2306.05685; fastchat/llm_judge/data/judge_prompts.jsonl and common.py), which the
paper this project studies (arXiv 2406.10630) runs with gpt-4-1106-preview for its MT-1 metric:
"single-v1" for every question, "single-math-v1" with a reference answer for math, reasoning and
coding. One grader serves MT-1 (mtbench.py) and the grade of the held-out benign answers.

A judgment without a rating, or a request that still fails after the retries, is counted as
ungraded (FastChat's -1, which its score table leaves out); the mean is over graded answers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

# FastChat's judge_prompts.jsonl, "single-v1" and "single-math-v1" (system prompt and template).
SYSTEM_PROMPT = "You are a helpful assistant."
SINGLE_V1 = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
SINGLE_MATH_V1 = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider correctness and "
    "helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by "
    "comparing the assistant's answer with the reference answer. Identify and correct any mistakes. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 "
    "by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n[Question]\n"
    "{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
)
# FastChat's one_score_pattern, then its backup.
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
MAX_TOKENS = 2048  # FastChat's judge call: temperature 0, 2,048 tokens


def parse_rating(judgment: str) -> float | None:
    """The judgment's rating (FastChat's patterns), or None when there is none in [1, 10]."""
    match = _RATING.search(judgment) or _RATING_BACKUP.search(judgment)
    if match is None:
        return None
    rating = float(match.group(1))
    return rating if 1.0 <= rating <= 10.0 else None


def judge_messages(question: str, answer: str, reference: str | None = None) -> list[dict]:
    """The chat messages of one grading request."""
    if reference is None:
        user = SINGLE_V1.format(question=question, answer=answer)
    else:
        user = SINGLE_MATH_V1.format(question=question, answer=answer, ref_answer_1=reference)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class Grades:
    grades: list[float | None]  # None = ungraded
    judgments: list[str]  # the grader's text, or the request's error

    @property
    def ungraded(self) -> int:
        return sum(g is None for g in self.grades)

    @property
    def mean(self) -> float | None:
        graded = [g for g in self.grades if g is not None]
        return round(sum(graded) / len(graded), 4) if graded else None


class Grader:
    """Grades (question, answer) pairs 1-10, `workers` requests at a time."""

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", *, timeout: float = 120.0,
                 workers: int = 8, retries: int = 3, backoff: float = 2.0):
        self.url = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.key = os.environ.get(api_key_env, "")
        self.timeout, self.workers, self.retries, self.backoff = timeout, workers, retries, backoff

    def complete(self, messages: list[dict]) -> str:
        """The endpoint's reply text. Retries a failed request (not a refused one: 4xx other than
        408 and 429), waiting backoff * 2**attempt seconds."""
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS}
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST", headers=headers)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"]
            except (urllib.error.URLError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as err:
                refused = isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code not in (408, 429)
                if attempt == self.retries or refused:  # a bad key or request stays bad
                    raise RuntimeError(f"{self.url}: {type(err).__name__}: {err}") from err
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def grade(self, question: str, answer: str, reference: str | None = None) -> tuple[float | None, str]:
        """(rating or None, the judgment text or the error)."""
        try:
            judgment = self.complete(judge_messages(question, answer, reference))
        except RuntimeError as err:
            return None, f"error: {err}"
        return parse_rating(judgment), judgment

    def grade_all(self, questions: list[str], answers: list[str],
                  references: list[str | None] | None = None) -> Grades:
        references = references or [None] * len(questions)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = list(pool.map(self.grade, questions, answers, references))
        grades = Grades([g for g, _ in results], [j for _, j in results])
        if grades.ungraded:
            log.warning("grader %s: %d of %d answers ungraded (no rating, or the request failed)",
                        self.model, grades.ungraded, len(results))
        return grades
