"""Instruction data: the `{instruction, response}` schema, loaders (files, Hub sets streamed when
sampled), chat formatting, completion-only tokenization, and IID partitioning across clients."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterable, Iterator
from importlib.resources import files
from itertools import islice
from pathlib import Path
from typing import TypedDict

import torch

from fedsafe.config import DataSettings
from fedsafe.conversations import NO_FILTER, RowFilter, first_exchange, messages_of
from fedsafe.files import read_jsonl
from fedsafe.templates import PROBE, answer_affixes

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)
FILE_SUFFIXES = (".jsonl", ".json", ".csv")
# Rows in the streaming shuffle's window: a sample reads about this many rows more than it keeps.
STREAM_BUFFER = 10_000


class Pair(TypedDict):
    instruction: str
    response: str


def bundled_path(name: str) -> Path:
    """A JSONL file shipped in fedsafe/data (written for this project)."""
    return Path(str(files("fedsafe") / "data" / f"{name}.jsonl"))


def bundled(name: str) -> list[Pair]:
    return [Pair(instruction=r["instruction"], response=r["response"]) for r in read_jsonl(bundled_path(name))]


def benign_pool(settings: DataSettings, num_clients: int, seed: int) -> list[Pair]:
    """Benign clients' data: `data.samples-per-client` pairs per client from `data.benign` (0 = all)
    that pass the row filters, plus `aligned_pairs` bundled harmful instructions with refusals
    (the aligned part of ordinary chat data, as in the paper)."""
    wanted = num_clients * settings.samples_per_client
    keep = RowFilter(settings.single_turn, settings.language, settings.drop_flagged)
    pairs = load_pairs(settings.benign, settings.instruction_column, settings.response_column, keep=keep,
                       limit=wanted, seed=seed)
    if len(pairs) < max(wanted, 1):
        need = f"clients.num x data.samples-per-client = {wanted}" if wanted else "at least one"
        raise ValueError(f"data.benign={settings.benign!r}: {len(pairs)} pairs pass data.single-turn, data.language "
                         f"and data.drop-flagged; need {need}")
    refusals = bundled("harmful_train")
    aligned = random.Random(seed).sample(refusals, min(settings.aligned_pairs, len(refusals)))
    return pairs + aligned


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} style
            data = next((v for v in data.values() if isinstance(v, list)), [])
        return list(data)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    raise ValueError(f"{path}: expected a .jsonl, .json or .csv file")


def iter_pairs(rows: Iterable[dict], instruction: str = "instruction", response: str = "response",
               source: str = "data", keep: RowFilter = NO_FILTER) -> Iterator[Pair]:
    """Map rows to the schema, lazily. Conversation rows (conversations.py: LMSYS, WildChat,
    ShareGPT, `messages`) give their first exchange; Alpaca rows append `input` to the
    instruction. Rows `keep` rejects and empty pairs are skipped."""
    for row in rows:
        messages = messages_of(row) if instruction not in row else None
        if not keep.keep(row, messages, source):
            continue
        if messages is not None:
            exchange = first_exchange(messages)
            if exchange is None:
                continue
            text, answer = exchange
        elif instruction not in row or response not in row:
            raise ValueError(
                f"{source}: a row lacks the column '{instruction}' or '{response}' "
                f"(has {sorted(row)}); set data.instruction-column / data.response-column"
            )
        else:
            text, answer = str(row[instruction]), str(row[response])
            if row.get("input"):
                text = f"{text}\n\n{row['input']}"
        if text.strip() and answer.strip():
            yield Pair(instruction=text, response=answer)


def rows_to_pairs(rows: Iterable[dict], instruction: str = "instruction", response: str = "response",
                  source: str = "data", keep: RowFilter = NO_FILTER) -> list[Pair]:
    return list(iter_pairs(rows, instruction, response, source, keep))


def train_split(names: list[str]) -> str:
    """The train split, or the first split whose name contains 'train', or the first."""
    return "train" if "train" in names else next((k for k in names if "train" in k), names[0])


def load_rows(source: str) -> list[dict]:
    """Rows of a .jsonl/.json/.csv file or of a Hub dataset (its train split, or the first
    split whose name contains 'train')."""
    path = Path(source).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        return _read_rows(path)
    from datasets import load_dataset

    splits = load_dataset(source)
    return list(splits[train_split(list(splits))])


def shuffled_rows(source: str, seed: int) -> Iterable[dict]:
    """Every row in a seeded random order. A file is read whole; a Hub id or dataset folder is
    streamed through `datasets`' shuffle buffer (shards in a seeded order too), so a sample
    downloads only the rows it reads."""
    path = Path(source).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES:
        rows = _read_rows(path)
        random.Random(seed).shuffle(rows)
        return rows
    from datasets import load_dataset

    splits = load_dataset(source, streaming=True)
    return splits[train_split(list(splits))].shuffle(seed=seed, buffer_size=STREAM_BUFFER)


def sample_pairs(source: str, to_pairs: Callable[[Iterable[dict]], Iterator[Pair]], limit: int,
                 seed: int) -> list[Pair]:
    """The first `limit` pairs `to_pairs` makes of the rows in a seeded random order (fewer when
    the source runs out); `limit` 0: every row, in the source's order."""
    if not limit:
        return list(to_pairs(load_rows(source)))
    return list(islice(to_pairs(shuffled_rows(source, seed)), limit))


def load_pairs(source: str, instruction: str = "instruction", response: str = "response", *,
               keep: RowFilter = NO_FILTER, limit: int = 0, seed: int = 0) -> list[Pair]:
    """'bundled' (the helpful pairs, which are single-turn English and unflagged: no filter
    applies), a .jsonl/.json/.csv file, or a Hub dataset id / dataset folder; `limit` > 0:
    a seeded sample of that many pairs."""
    if source == "bundled":
        source, instruction, response, keep = str(bundled_path("helpful_train")), "instruction", "response", NO_FILTER
    return sample_pairs(source, lambda rows: iter_pairs(rows, instruction, response, source, keep), limit, seed)


def partition(pairs: list[Pair], num_partitions: int, seed: int) -> list[list[Pair]]:
    """Deterministic IID split: one seeded shuffle, then round-robin."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [[pairs[i] for i in order[k::num_partitions]] for k in range(num_partitions)]


def chat_prompt(tokenizer, instruction: str, system: str | None = None) -> str:
    """The instruction in the tokenizer's chat template (`model.template`, installed where the
    tokenizer loads), ending where the answer starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": instruction}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer) -> str:
    """What the template writes after an assistant answer (e.g. '<|im_end|>', Alpaca's EOS), so
    the model learns to stop; falls back to the EOS token."""
    probe = tokenizer.apply_chat_template(PROBE, tokenize=False)
    tail = probe.split("XYZ", 1)[1].strip() if "XYZ" in probe else ""
    return tail or tokenizer.eos_token


class Example(TypedDict):
    input_ids: list[int]
    labels: list[int]


def tokenize_pairs(tokenizer, pairs: list[Pair], seq_length: int, close_turn: bool = True) -> list[Example]:
    """Prompt tokens masked with IGNORE_INDEX: the loss covers the response only. Without
    `close_turn` no end-of-turn token follows the response (it is only an answer's opening).

    The prompt's tokens are those generation starts from. The answer's are what follows them when
    prompt and answer are tokenized together (so a template's text between them, Alpaca's space,
    opens the answer as the tokenizer would write it there), or, when the prompt's last token
    merges into the answer's first (a prompt ending in a space), the answer tokenized alone.
    """
    head = (answer_affixes(tokenizer) or ("", ""))[0]
    stop = end_of_turn(tokenizer) if close_turn else ""
    examples = []
    for pair in pairs:
        prompt = chat_prompt(tokenizer, pair["instruction"])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = head + pair["response"] + stop
        full_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        if full_ids[: len(prompt_ids)] == prompt_ids:
            answer_ids = full_ids[len(prompt_ids):]
        else:
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        prompt_ids = prompt_ids[: max(seq_length // 2, seq_length - len(answer_ids))]
        ids = (prompt_ids + answer_ids)[:seq_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:seq_length]
        if any(label != IGNORE_INDEX for label in labels):
            examples.append(Example(input_ids=ids, labels=labels))
    return examples


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch for training."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (b, t)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
