"""An lm-eval task whose documents carry a conversation: prompted through the chat template.

lm-eval's own chat path (`apply_chat_template=True`) turns a document's ``doc_to_text`` into
one user message. A chat eval item is a whole conversation (an optional system message, earlier
turns, the last user turn), so `ChatPromptTask` renders the document's ``messages`` with the
model's chat template and ``add_generation_prompt=True``, through the same `chat_template`
callable lm-eval hands every task (HFLM's and the completions API's ``apply_chat_template``).
Without a chat template it is an ordinary `ConfigurableTask` (the YAML's ``doc_to_text``).

The task YAML names it with ``class: !function chat_task.ChatPromptTask``, through a one-line
module the suite writes beside the rendered YAML (eval/suite/specs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lm_eval.api.task import ConfigurableTask


class ChatPromptTask(ConfigurableTask):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        # lm-eval passes the whole YAML, including the "class" key that chose this class.
        super().__init__(config={k: v for k, v in (config or {}).items() if k != "class"})

    def fewshot_context(
            self, doc: dict[str, Any], num_fewshot: int, system_instruction: str | None = None,
            apply_chat_template: bool = False, fewshot_as_multiturn: bool = False,
            chat_template: Callable[..., str] | None = None, gen_prefix: str | None = None
    ) -> str | list[str]:
        if not (apply_chat_template and chat_template):
            return super().fewshot_context(
                doc, num_fewshot=num_fewshot, system_instruction=system_instruction,
                apply_chat_template=apply_chat_template,
                fewshot_as_multiturn=fewshot_as_multiturn, chat_template=chat_template,
                gen_prefix=gen_prefix)
        return chat_template(conversation_prompt(doc["messages"], system_instruction),
                             add_generation_prompt=True)


def conversation_prompt(messages: list[dict[str, Any]], system_instruction: str | None
                        ) -> list[dict[str, str]]:
    """The messages as plain {role, content} dicts; `system_instruction` is a system message
    only where the conversation has none of its own (the conversation's wins)."""
    prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if system_instruction and (not prompt or prompt[0]["role"] != "system"):
        prompt.insert(0, {"role": "system", "content": system_instruction})
    return prompt
