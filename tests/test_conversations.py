"""The paper's chat data sets as pairs: LMSYS-Chat-1M, WildChat and ShareGPT layouts, the row
filters (counted row by row), and the seeded per-client sample, on files and through the
streaming path a Hub id takes (a local dataset folder)."""

import pytest

from fedsafe import data
from fedsafe.config import from_run_config
from fedsafe.conversations import RowFilter
from fedsafe.files import write_jsonl

N = 40
CATEGORIES = {"harassment": False, "violence": False, "sexual": False}


def _moderation(flagged: bool, by_category: bool = False) -> dict:
    """An OpenAI moderation record; `by_category`: flagged through a category only."""
    return {"flagged": flagged and not by_category, "categories": {**CATEGORIES, "violence": flagged and by_category},
            "category_scores": dict.fromkeys(CATEGORIES, 0.0)}


def lmsys_rows() -> list[dict]:
    """Row i: English when i is even; two exchanges when i % 5 == 0; its answer flagged when
    i % 7 == 0 (7 and 21 through a category only); its request flagged (answer not) when i % 11 == 0."""
    rows = []
    for i in range(N):
        exchanges = 2 if i % 5 == 0 else 1
        conversation, moderation = [], []
        for turn in range(exchanges):
            conversation += [{"role": "user", "content": f"question {i}.{turn}"},
                             {"role": "assistant", "content": f"answer {i}.{turn}"}]
            moderation += [_moderation(turn == 0 and i % 11 == 0),
                           _moderation(turn == 0 and i % 7 == 0, by_category=i in (7, 21))]
        rows.append({"conversation_id": str(i), "model": "vicuna-13b", "conversation": conversation, "turn": exchanges,
                     "language": "English" if i % 2 == 0 else "Portuguese", "openai_moderation": moderation,
                     "redacted": False})
    return rows


def wildchat_rows(moderation: bool = True) -> list[dict]:
    """10 rows, all English; rows 0-2 `toxic`, and of those only rows 0 and 1 have a flagged first
    answer (row 2's flagged message is a later one)."""
    rows = []
    for i in range(10):
        conversation = [{"role": "user", "content": f"ask {i}", "timestamp": None, "country": "US"},
                        {"role": "assistant", "content": f"reply {i}", "timestamp": None, "country": None},
                        {"role": "user", "content": f"again {i}", "timestamp": None, "country": "US"},
                        {"role": "assistant", "content": f"more {i}", "timestamp": None, "country": None}]
        row = {"conversation_hash": str(i), "model": "gpt-3.5-turbo", "conversation": conversation, "turn": 2,
               "language": "English", "toxic": i < 3, "redacted": i == 4}
        if moderation:
            row["openai_moderation"] = [_moderation(False), _moderation(i < 2), _moderation(i == 2), _moderation(False)]
        rows.append(row)
    return rows


def sharegpt_rows() -> list[dict]:
    return [
        {"id": "a", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "b", "conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Help?"},
                                      {"from": "gpt", "value": "Sure."}, {"from": "human", "value": "Thanks"},
                                      {"from": "gpt", "value": "Welcome."}]},
        {"id": "c", "conversations": [{"from": "gpt", "value": "I speak first."}, {"from": "human", "value": "Ok"}]},
    ]


def _instructions(pairs) -> list[str]:
    return [p["instruction"] for p in pairs]


def test_layouts_give_the_first_exchange(tmp_path):
    lmsys = data.rows_to_pairs(lmsys_rows())
    assert len(lmsys) == N and lmsys[5] == {"instruction": "question 5.0", "response": "answer 5.0"}
    assert data.rows_to_pairs(wildchat_rows())[3] == {"instruction": "ask 3", "response": "reply 3"}
    write_jsonl(tmp_path / "sharegpt.jsonl", sharegpt_rows())
    assert data.load_pairs(str(tmp_path / "sharegpt.jsonl")) == [  # row c has no answer after its request
        {"instruction": "Hi there", "response": "Hello!"}, {"instruction": "Help?", "response": "Sure."}]


def test_each_filter_drops_exactly_its_rows():
    rows = lmsys_rows()
    assert len(data.rows_to_pairs(rows, keep=RowFilter(language="English"))) == 20  # the even rows
    assert len(data.rows_to_pairs(rows, keep=RowFilter(language="english"))) == 20
    assert len(data.rows_to_pairs(rows, keep=RowFilter(single_turn=True))) == N - 8  # i % 5 == 0: 8 rows
    unflagged = data.rows_to_pairs(rows, keep=RowFilter(drop_flagged=True))
    # i % 7 == 0: 0, 7, 14, 21, 28, 35; rows 11, 22, 33 (only the request flagged) stay, as in the paper
    assert len(unflagged) == N - 6 and {"question 11.0", "question 22.0", "question 33.0"} <= set(_instructions(unflagged))
    paper = data.rows_to_pairs(rows, keep=RowFilter(single_turn=True, language="English", drop_flagged=True))
    # even rows (20) without 0, 10, 20, 30 (two exchanges) and 14, 28 (flagged answer)
    assert len(paper) == 14 and "question 14.0" not in _instructions(paper)


def test_wildchat_flags_by_first_answer_else_by_toxic():
    assert _instructions(data.rows_to_pairs(wildchat_rows(), keep=RowFilter(drop_flagged=True))) == [
        f"ask {i}" for i in range(2, 10)]
    assert _instructions(data.rows_to_pairs(wildchat_rows(moderation=False), keep=RowFilter(drop_flagged=True))) == [
        f"ask {i}" for i in range(3, 10)]
    assert data.rows_to_pairs(wildchat_rows(), keep=RowFilter(single_turn=True)) == []  # every row has turn 2


def test_sharegpt_counts_its_requests_and_filters_need_their_columns():
    assert _instructions(data.rows_to_pairs(sharegpt_rows(), keep=RowFilter(single_turn=True))) == ["Hi there"]
    with pytest.raises(ValueError, match="data.language='English': sharegpt has no 'language' column"):
        data.rows_to_pairs(sharegpt_rows(), source="sharegpt", keep=RowFilter(language="English"))
    with pytest.raises(ValueError, match="data.drop-flagged=true: sharegpt has neither"):
        data.rows_to_pairs(sharegpt_rows(), source="sharegpt", keep=RowFilter(drop_flagged=True))


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_a_seeded_sample_takes_exactly_what_passes(tmp_path, layout):
    """A file is read whole; a dataset folder goes through `datasets` streaming, as a Hub id does."""
    if layout == "file":
        source = tmp_path / "lmsys.jsonl"
        write_jsonl(source, lmsys_rows())
    else:
        source = tmp_path / "lmsys-chat-1m"
        write_jsonl(source / "data" / "train-00000.jsonl", lmsys_rows())
    paper = RowFilter(single_turn=True, language="English", drop_flagged=True)
    passing = set(_instructions(data.rows_to_pairs(lmsys_rows(), keep=paper)))

    def sample(seed, limit=6):
        return data.load_pairs(str(source), keep=paper, limit=limit, seed=seed)

    first = sample(0)
    assert len(first) == 6 and set(_instructions(first)) <= passing
    assert sample(0) == first and sample(1) != first
    assert len(sample(0, limit=100)) == len(passing)  # the source runs out: every passing row, once


def test_hub_path_streams(tmp_path):
    from datasets import IterableDataset

    write_jsonl(tmp_path / "set" / "train.jsonl", lmsys_rows())
    assert isinstance(data.shuffled_rows(str(tmp_path / "set"), seed=0), IterableDataset)
    assert isinstance(data.shuffled_rows(str(tmp_path / "set" / "train.jsonl"), seed=0), list)


def test_samples_per_client_gives_every_client_exactly_that_many(tmp_path):
    folder = tmp_path / "wildchat-like"
    write_jsonl(folder / "train.jsonl", lmsys_rows())
    config = {"data.benign": str(folder), "data.samples-per-client": 3, "data.aligned-pairs": 0,
              "data.single-turn": True, "data.language": "English", "data.drop-flagged": True,
              "clients.num": 4, "clients.per-round": 2, "attack.num-malicious": 0}
    settings = from_run_config(config)
    parts = data.partition(data.benign_pool(settings.data, 4, settings.seed), 4, settings.seed)
    assert [len(p) for p in parts] == [3] * 4 and len({p["instruction"] for part in parts for p in part}) == 12
    with pytest.raises(ValueError, match="clients.num x data.samples-per-client = 20"):
        data.benign_pool(from_run_config({**config, "data.samples-per-client": 5}).data, 4, 0)
