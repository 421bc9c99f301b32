"""The parity prompt set (deploy/parity.py) and how each prompt is rendered: by the reference
(`render_prompt_ids`) and, asked the same way, by the engine (`tokenize_request`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import StageError
from common.template import format_prompt

PROMPTS_FILE = Path(__file__).with_name("parity_prompts.jsonl")
# Bump the version with any change to the file; the digest pins the file to its version (a
# test checks it), so two records with one version compared the same prompts.
PROMPTS_VERSION = "1"
PROMPTS_SHA256 = "4caf128ab8754760dd4674f37f8bdf551a1c760ee200aa6e28731176721f3327"


@dataclass(frozen=True)
class ParityPrompt:
    id: str
    # one user turn (the project's own chat template accepts exactly one)
    prompt: str


def load_prompts(path: Path = PROMPTS_FILE) -> list[ParityPrompt]:
    """The shipped prompt set, refused when its bytes are not the pinned version's."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path == PROMPTS_FILE and digest != PROMPTS_SHA256:
        raise StageError("CONFIG_INVALID",
                         f"{path} has sha256 {digest}, not the one pinned for version "
                         f"{PROMPTS_VERSION} ({PROMPTS_SHA256}): after editing the prompts bump "
                         "PROMPTS_VERSION and pin the new digest in deploy/parity_prompts.py.")
    rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return [ParityPrompt(str(r["id"]), str(r["prompt"])) for r in rows]


def chat_messages(prompt: ParityPrompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt.prompt}]


def render_prompt_ids(tokenizer: Any, prompt: ParityPrompt) -> list[int]:
    """Prompt ids as the engine's chat route builds them: the model's chat template rendered to
    text, then tokenized without adding special tokens again (vLLM's way); without a template,
    the project's prompt format tokenized as training does."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(format_prompt(prompt.prompt)))


def tokenize_request(tokenizer: Any, prompt: ParityPrompt, served_model_name: str
                     ) -> dict[str, Any]:
    """The /tokenize body that makes the engine render `prompt` as `render_prompt_ids` does."""
    if getattr(tokenizer, "chat_template", None):
        return {"model": served_model_name, "messages": chat_messages(prompt),
                "add_generation_prompt": True}
    return {"model": served_model_name, "prompt": format_prompt(prompt.prompt),
            "add_special_tokens": True}

