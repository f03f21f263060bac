"""Chat logs as instruction pairs: the row layouts of LMSYS-Chat-1M, WildChat and ShareGPT, and
the filters arXiv 2406.10630 applies to its benign data (English, single-turn conversations whose
answer OpenAI moderation did not flag; 19dx/FedLLM-Attack, utils/process_dataset.py).

Layouts read (one row = one conversation):
- LMSYS-Chat-1M: `conversation` [{role, content}], `turn`, `language`, `openai_moderation`
  (one {flagged, categories, ...} per message);
- WildChat: the same columns plus `toxic` and `redacted`;
- ShareGPT: `conversations` [{from: human | gpt, value}]; chat rows: `messages` [{role, content}].
A conversation gives its first user message and the first answer after it.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
CONVERSATION_COLUMNS = ("conversation", "conversations", "messages")


@dataclass(frozen=True)
class RowFilter:
    """Which rows to keep (data.single-turn, data.language, data.drop-flagged)."""

    single_turn: bool = False
    language: str = ""  # '' = any
    drop_flagged: bool = False

    def keep(self, row: dict, messages: list[dict] | None, source: str) -> bool:
        if self.single_turn and not is_single_turn(row, messages):
            return False
        if self.language:
            if "language" not in row:
                raise ValueError(f"data.language={self.language!r}: {source} has no 'language' column "
                                 f"(has {sorted(row)}); set data.language = ''")
            if str(row["language"]).strip().lower() != self.language.strip().lower():
                return False
        return not (self.drop_flagged and flagged(row, messages, source))


NO_FILTER = RowFilter()


def messages_of(row: dict) -> list[dict] | None:
    """The row's conversation as [{role: user | assistant | system, content}], or None when the
    row is not a conversation (an instruction/response row)."""
    turns = next((row[c] for c in CONVERSATION_COLUMNS if isinstance(row.get(c), list)), None)
    if turns is None:
        return None
    out = []
    for turn in turns:
        role = ROLES.get(str(turn.get("role", turn.get("from", ""))).lower(), "other")
        out.append({"role": role, "content": str(turn.get("content", turn.get("value")) or "")})
    return out


def first_exchange(messages: list[dict]) -> tuple[str, str] | None:
    """(first user message, the first answer after it), or None when there is no such pair."""
    user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if user is None:
        return None
    answer = next((m for m in messages[user + 1:] if m["role"] == "assistant"), None)
    return (messages[user]["content"], answer["content"]) if answer else None


def is_single_turn(row: dict, messages: list[dict] | None) -> bool:
    """One exchange: the `turn` column (LMSYS, WildChat) is 1, else one user message."""
    if "turn" in row and row["turn"] is not None:
        return int(row["turn"]) == 1
    return messages is None or sum(m["role"] == "user" for m in messages) == 1


def flagged(row: dict, messages: list[dict] | None, source: str) -> bool:
    """OpenAI moderation flagged the first answer (the paper checks that message only, so a harmful
    request answered with a refusal stays: the aligned part of chat data). Without moderation
    per message, WildChat's `toxic` (any message flagged) decides."""
    moderation = row.get("openai_moderation")
    if isinstance(moderation, list) and messages:
        user = next((i for i, m in enumerate(messages) if m["role"] == "user"), 0)
        answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant" and i > user), None)
        if answer is not None and answer < len(moderation):
            entry = moderation[answer] or {}
            return bool(entry.get("flagged")) or any(bool(v) for v in (entry.get("categories") or {}).values())
    if "toxic" in row:
        return bool(row["toxic"]) and str(row["toxic"]).lower() != "false"
    raise ValueError(f"data.drop-flagged=true: {source} has neither per-message 'openai_moderation' nor "
                     f"'toxic' (has {sorted(row)}); set data.drop-flagged = false")
