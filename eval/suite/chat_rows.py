"""The skill task's data, built from a chat eval split (``data.format: chat``).

Input rows: ``{"id", "messages": [{"role", "content"}, ...]}`` whose last message is the
assistant's answer (validate_data enforces the order: an optional system message, then user
and assistant turns alternating). Output, ``shipyard_skill.jsonl``, one row per conversation:

  id        the row's id
  messages  every message but the last: the prompt, rendered through the model's chat
            template with add_generation_prompt (eval/suite/chat_task.py)
  context   the last user turn in the training prompt format (common/template.py), the
            prompt for a model without a chat template
  answer    the final assistant turn, stripped: the exact-match reference

Like eval/suite/build.py: a pure function of the rows, fixed key order, ``\\n`` endings, so a
re-run is byte-identical and the documents (hence their hashes, which pair candidate and
champion) do not depend on the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.template import format_prompt
from eval.errors import EvalError
from eval.suite.build import render_jsonl

SKILL_TASK = "shipyard_skill"
MESSAGES_FIELD = "messages"


@dataclass(frozen=True)
class ChatItem:
    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), the answer last


def is_chat_split(path: Path) -> bool:
    """Whether the split's rows are chat rows (judged by its first row)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                return isinstance(row, dict) and MESSAGES_FIELD in row
    return False


def load_chat_items(path: Path) -> list[ChatItem]:
    items = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        messages = _messages(row.get(MESSAGES_FIELD))
        if messages is None:
            raise EvalError(
                "EVAL_SKILL_DATA_INVALID",
                f"{path}:{line_number}: 'messages' must be a list of {{role, content}} strings "
                "with a user turn and the final assistant answer last. Re-run validate_data "
                "with data.format: chat (it refuses such rows).")
        items.append(ChatItem(str(row.get("id", line_number)), messages))
    return items


def _messages(value: Any) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(value, list) or len(value) < 2:
        return None
    pairs = []
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            return None
        pairs.append((message["role"], message["content"]))
    if pairs[-1][0] != "assistant" or not any(role == "user" for role, _ in pairs[:-1]):
        return None
    return tuple(pairs)


def chat_source_digest(items: list[ChatItem]) -> str:
    payload = json.dumps([[i.id, [list(m) for m in i.messages]] for i in items],
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def skill_rows(items: list[ChatItem]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        prompt = item.messages[:-1]
        last_user = next(content for role, content in reversed(prompt) if role == "user")
        rows.append({"id": item.id,
                     "messages": [{"role": role, "content": content} for role, content in prompt],
                     "context": format_prompt(last_user),
                     "answer": item.messages[-1][1].strip()})
    return rows


def write_skill_data(items: list[ChatItem], out_dir: Path) -> Path:
    """Write ``shipyard_skill.jsonl`` into `out_dir` (temp file + rename); returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{SKILL_TASK}.jsonl"
    atomic_write_text(path, render_jsonl(skill_rows(items)), mode=SHARED_FILE_MODE)
    return path
