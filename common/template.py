"""The one prompt format shared by training, evaluation and serving.

Changing it changes what the model learns: bump `TEMPLATE_VERSION` when you do.
"""

from __future__ import annotations

TEMPLATE_VERSION = "1"
PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n### Response:\n"


def format_prompt(prompt: str) -> str:
    return PROMPT_TEMPLATE.format(prompt=prompt)


def format_example(prompt: str, response: str, eos_token: str) -> str:
    return format_prompt(prompt) + response + eos_token
