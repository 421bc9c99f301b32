"""Chat-format rows (`data.format: chat`): the conversation rules and the token ids plus loss
mask of one conversation, rendered by the base model's own chat template.

A row's messages column holds a list of ``{"role", "content"}`` objects: an optional leading
system message, then user and assistant turns strictly alternating, starting with a user turn
and ending with an assistant turn. Each rule below returns None when the row passes and a
short reason when it fails; the data gate turns them into one report rule each.

Which tokens are labels: every assistant turn's content and the end-of-turn token (eos) that
closes it. Not the system or user turns, not the role headers, not the newline after eos.
Tokenizers can compute that mask only for templates with ``{% generation %}`` markers, which
SmolLM2's ChatML template lacks, so the spans are found by rendering prefixes: assistant turn
i starts where ``render(messages[:i], add_generation_prompt=True)`` ends and ends at the last
eos within ``render(messages[:i+1])``. That is only right if those prefixes' tokens are
prefixes of the whole conversation's tokens, which is checked for every turn of every row
(content starting with blank lines, say, merges with the header's newline into one token).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import StageError

ROLES = ("system", "user", "assistant")
# Rendered once per tokenizer to refuse a template the masking cannot use, before any data.
PROBE_CONVERSATION = (
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What colour is the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green."},
)


class ConversationError(ValueError):
    """The template cannot render this conversation, or not in a way the mask can use."""


@dataclass(frozen=True)
class EncodedConversation:
    ids: list[int]  # the whole rendered conversation, as the template writes it
    loss_mask: list[int]  # 1 where ids[j] is a label (assistant content + its eos), else 0

    @property
    def num_loss_tokens(self) -> int:
        return sum(self.loss_mask)


def as_messages(value: Any) -> Any:
    """A Parquet list column arrives as a numpy array of dicts; JSONL as a list."""
    return list(value) if isinstance(value, np.ndarray) else value


def structure_problem(value: Any) -> str | None:
    value = as_messages(value)
    if not isinstance(value, list) or not value:
        return "not a non-empty list"
    for message in value:
        if not isinstance(message, dict):
            return "a message is not an object"
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"),
                                                                       str):
            return "a message lacks a string role or content"
    return None


def role_problem(messages: list[dict[str, Any]]) -> str | None:
    unknown = sorted({m["role"] for m in messages} - set(ROLES))
    return f"unknown role(s) {unknown}" if unknown else None


def order_problem(messages: list[dict[str, Any]]) -> str | None:
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    if not turns or [m["role"] for m in turns] != expected[:len(turns)]:
        return "turns do not alternate user, assistant, ... after an optional system message"
    if turns[-1]["role"] != "assistant":
        return "the conversation does not end with an assistant turn"
    return None


def assistant_problem(messages: list[dict[str, Any]]) -> str | None:
    if any(m["role"] == "assistant" and not m["content"].strip() for m in messages):
        return "an assistant turn is empty"
    return None


def conversation_text(messages: list[dict[str, Any]]) -> str:
    """One line per message (``role: content``): what the PII and duplicate rules read."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def canonical_messages(messages: Any) -> list[dict[str, str]]:
    """Only role and content, in that order: the normalized split's messages column."""
    return [{"role": m["role"], "content": m["content"]} for m in as_messages(messages)]


def encode_conversation(tokenizer: Any, messages: Sequence[dict[str, Any]]
                        ) -> EncodedConversation:
    """Token ids and loss mask of a conversation that passed the structure rules.

    Raises `ConversationError` when the template fails on it or is not prefix-stable on it."""
    messages = list(messages)
    ids = _encode(tokenizer, messages, add_generation_prompt=False)
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_prefix(tokenizer, messages[:i], True, ids, i))
        through = len(_prefix(tokenizer, messages[:i + 1], False, ids, i))
        closing = [j for j in range(start, through) if ids[j] == tokenizer.eos_token_id]
        if not closing:
            raise ConversationError(f"assistant turn {i} does not end with the eos token "
                                    f"{tokenizer.eos_token!r}, so the model would not learn "
                                    "to stop")
        mask[start:closing[-1] + 1] = [1] * (closing[-1] + 1 - start)
    return EncodedConversation(ids, mask)


def _prefix(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool,
            full: list[int], turn: int) -> list[int]:
    ids = _encode(tokenizer, messages, add_generation_prompt)
    if full[:len(ids)] != ids:
        raise ConversationError(
            f"not prefix-stable at message {turn}: the tokens of the conversation up to "
            f"{'its header' if add_generation_prompt else 'its end'} are not a prefix of the "
            "whole conversation's tokens (e.g. content starting with blank lines merges "
            "with the header's newline)")
    return ids


def _encode(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool
            ) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # Jinja's raise_exception, TypeError, ...: all "cannot render"
        raise ConversationError(f"the chat template fails: {type(exc).__name__}: {exc}") from exc
    # The template writes the special tokens itself (as apply_chat_template(tokenize=True)).
    return list(tokenizer.encode(text, add_special_tokens=False))


def check_chat_template(tokenizer: Any, source: str) -> None:
    """Refuse, before any data is read, a tokenizer without a chat template or with one the
    loss mask cannot be computed from."""
    if not getattr(tokenizer, "chat_template", None):
        raise StageError(
            "DATA_CHAT_TEMPLATE_MISSING",
            f"data.base_model_dir={source!r}: its tokenizer has no chat template, so "
            "data.format='chat' cannot render conversations. Use an instruct model's "
            "directory (tokenizer_config.json or chat_template.jinja holds the template), or "
            "use data.format='prompt_response'.",
        )
    try:
        encode_conversation(tokenizer, PROBE_CONVERSATION)
    except ConversationError as exc:
        raise StageError(
            "DATA_CHAT_TEMPLATE_UNSUPPORTED",
            f"data.base_model_dir={source!r}: its chat template cannot be used for "
            f"assistant-only loss on a plain two-turn conversation: {exc}. The loss mask is "
            "found by rendering conversation prefixes, which needs a template whose "
            "rendering of a prefix is a token prefix of the whole and that closes each "
            "assistant turn with eos. Use such a template (ChatML, Llama 3, ...), or "
            "data.format='prompt_response'.",
            details={"probe": json.dumps(PROBE_CONVERSATION)},
        ) from exc
