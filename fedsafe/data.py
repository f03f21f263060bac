"""Instruction data: the `{instruction, response}` schema, loaders, chat formatting,
completion-only tokenization, and IID partitioning across clients."""

from __future__ import annotations

import csv
import json
import random
from importlib.resources import files
from pathlib import Path
from typing import Iterable, TypedDict

import torch

from fedsafe.files import read_jsonl
from fedsafe.templates import PROBE, answer_affixes

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding tokens)


class Pair(TypedDict):
    instruction: str
    response: str


def bundled_path(name: str) -> Path:
    """A JSONL file shipped in fedsafe/data (written for this project)."""
    return Path(str(files("fedsafe") / "data" / f"{name}.jsonl"))


def bundled(name: str) -> list[Pair]:
    return [Pair(instruction=r["instruction"], response=r["response"]) for r in read_jsonl(bundled_path(name))]


def benign_pool(source: str, instruction: str, response: str, aligned_pairs: int, seed: int) -> list[Pair]:
    """Benign clients' data: instruction pairs from `source` plus `aligned_pairs` bundled harmful
    instructions with refusals (the aligned part of ordinary chat data, as in the paper)."""
    refusals = bundled("harmful_train")
    aligned = random.Random(seed).sample(refusals, min(aligned_pairs, len(refusals)))
    return load_pairs(source, instruction, response) + aligned


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


def rows_to_pairs(rows: Iterable[dict], instruction: str = "instruction", response: str = "response",
                  source: str = "data") -> list[Pair]:
    """Map columns to the schema. Chat rows (`messages`/`conversations`) take the first user
    and assistant turns; Alpaca rows append `input` to the instruction."""
    pairs = []
    for row in rows:
        turns = row.get("messages") or row.get("conversations")
        if turns and instruction not in row:
            user = next((t for t in turns if t.get("role", t.get("from")) in ("user", "human")), None)
            bot = next((t for t in turns if t.get("role", t.get("from")) in ("assistant", "gpt")), None)
            if user and bot:
                pairs.append(Pair(instruction=str(user.get("content", user.get("value"))),
                                  response=str(bot.get("content", bot.get("value")))))
            continue
        if instruction not in row or response not in row:
            raise ValueError(
                f"{source}: a row lacks the column '{instruction}' or '{response}' "
                f"(has {sorted(row)}); set data.instruction-column / data.response-column"
            )
        text = str(row[instruction])
        if row.get("input"):
            text = f"{text}\n\n{row['input']}"
        pairs.append(Pair(instruction=text, response=str(row[response])))
    return [p for p in pairs if p["instruction"].strip() and p["response"].strip()]


def load_rows(source: str) -> list[dict]:
    """Rows of a .jsonl/.json/.csv file or of a Hub dataset (its train split, or the first
    split whose name contains 'train')."""
    path = Path(source).expanduser()
    if path.suffix.lower() in (".jsonl", ".json", ".csv"):
        return _read_rows(path)
    from datasets import load_dataset

    splits = load_dataset(source)
    name = "train" if "train" in splits else next((k for k in splits if "train" in k), next(iter(splits)))
    return list(splits[name])


def load_pairs(source: str, instruction: str = "instruction", response: str = "response") -> list[Pair]:
    """'bundled' (the helpful pairs), a .jsonl/.json/.csv file, or a Hub dataset id."""
    if source == "bundled":
        return bundled("helpful_train")
    return rows_to_pairs(load_rows(source), instruction, response, source=source)


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
