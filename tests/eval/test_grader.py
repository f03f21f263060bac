"""The 1-10 grader against a real OpenAI-compatible HTTP server on localhost."""

import pytest

from fedsafe.eval.grader import (
    SINGLE_MATH_V1,
    SINGLE_V1,
    SYSTEM_PROMPT,
    Grader,
    judge_messages,
    parse_rating,
)


@pytest.mark.parametrize(
    ("judgment", "rating"),
    [
        ("Helpful and correct.\n\nRating: [[8]]", 8.0),
        ("Rating: [[5.5]]", 5.5),
        ("Rating: [[10]]", 10.0),
        ("Rating: [7]", 7.0),  # FastChat's backup pattern
        ("Scores [[3]] and then [[9]]", 3.0),  # the first rating, as FastChat's re.search
        ("Rating: [[0]]", None),  # outside the 1-10 scale: ungraded
        ("Rating: [[11]]", None),
        ("I would rate it highly.", None),
        ("", None),
    ],
)
def test_parse_rating(judgment, rating):
    assert parse_rating(judgment) == rating


def test_grader_request_and_mean(chat_server, monkeypatch):
    """Body: model, FastChat's system prompt and single-v1 text with the question and answer,
    temperature 0; the key from the named variable; unparseable judgments counted."""
    monkeypatch.setenv("FEDSAFE_TEST_GRADER_KEY", "sk-local")
    scripted = {"Name a composer.": "Good. Rating: [[9]]", "What is 2+2?": "Rating: [[4]]",
                "Say hi.": "Fine answer, no number."}
    chat_server.reply = lambda body: next(v for q, v in scripted.items() if q in body["messages"][1]["content"])
    grader = Grader(chat_server.url + "/", "judge-model", "FEDSAFE_TEST_GRADER_KEY", workers=2)
    questions = list(scripted)
    answers = ["Bach.", "4", "Hi!"]
    grades = grader.grade_all(questions, answers)

    assert grades.grades == [9.0, 4.0, None]
    assert grades.mean == 6.5 and grades.ungraded == 1
    assert grades.judgments == list(scripted.values())
    assert len(chat_server.requests) == 3
    for request in chat_server.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == "Bearer sk-local"
        body = request["body"]
        assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 2048
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    sent = sorted(chat_server.user_messages())
    assert sent == sorted(SINGLE_V1.format(question=q, answer=a) for q, a in zip(questions, answers))
    assert "[Question]\nName a composer.\n\n[The Start of Assistant's Answer]\nBach.\n" in sent[0] + sent[1] + sent[2]


def test_reference_answer_takes_the_math_prompt(chat_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    grader = Grader(chat_server.url, "m")
    grades = grader.grade_all(["What is 3*4?", "Write a poem."], ["12", "Roses."], ["12", None])
    assert grades.grades == [5.0, 5.0]
    by_question = {m["content"].split("[Question]\n")[1].split("\n")[0]: m for r in chat_server.requests
                   for m in r["body"]["messages"][1:]}
    assert by_question["What is 3*4?"]["content"] == SINGLE_MATH_V1.format(question="What is 3*4?", answer="12",
                                                                            ref_answer_1="12")
    assert "[The Start of Reference Answer]\n12\n[The End of Reference Answer]" in by_question["What is 3*4?"]["content"]
    assert by_question["Write a poem."]["content"] == SINGLE_V1.format(question="Write a poem.", answer="Roses.")
    assert all("Authorization" not in r["headers"] for r in chat_server.requests)  # no key set: none sent
    assert judge_messages("q", "a")[1]["content"] == SINGLE_V1.format(question="q", answer="a")


def test_failed_requests_are_retried_then_counted(chat_server):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        return 503 if calls["n"] == 1 else "Rating: [[6]]"

    chat_server.reply = flaky
    assert Grader(chat_server.url, "m", backoff=0).grade_all(["q"], ["a"]).grades == [6.0]
    assert calls["n"] == 2

    chat_server.reply = lambda body: 500
    grades = Grader(chat_server.url, "m", retries=2, backoff=0).grade_all(["q", "r"], ["a", "b"])
    assert grades.grades == [None, None] and grades.ungraded == 2 and grades.mean is None
    assert all(j.startswith("error: ") and "500" in j for j in grades.judgments)
    assert len(chat_server.requests) == 2 + 2 * 3  # each pair: one try and two retries

    chat_server.requests.clear()
    chat_server.reply = lambda body: 401  # a bad key: refused at once, no retries
    grades = Grader(chat_server.url, "m", retries=2, backoff=0).grade_all(["q"], ["a"])
    assert grades.ungraded == 1 and "401" in grades.judgments[0] and len(chat_server.requests) == 1
