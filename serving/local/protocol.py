"""Typed request models of the local engine: the subset of vLLM's OpenAI protocol it serves.

Unknown fields are ignored (OpenAI clients send many), but every field it reads is checked
here, so a bad value is a 400 naming the field before any work is queued.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# vLLM's limit on requested top logprobs per position (its --max-logprobs default).
MAX_LOGPROBS = 20
# Bounded request size: a single request cannot occupy the server with an unbounded batch.
MAX_PROMPTS_PER_REQUEST = 64
MAX_STOP_SEQUENCES = 8


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class CompletionRequest(_Request):
    model: str | None = None
    # a string, a list of strings, a list of token ids, or a list of token-id lists
    # (lm-eval's local-completions sends token ids)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    # vLLM's extension: logprob entries name tokens as "token_id:N" instead of their text, so
    # a client can compare token ids exactly (deploy's served-model parity check does)
    return_tokens_as_token_ids: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: object) -> object:
        if isinstance(value, list):
            if not value:
                raise ValueError("prompt must not be an empty list")
            if len(value) > MAX_PROMPTS_PER_REQUEST and not isinstance(value[0], int):
                raise ValueError(f"at most {MAX_PROMPTS_PER_REQUEST} prompts per request")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, value: object) -> object:
        return _check_stop(value)


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, object]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(str(part["text"]))
        return "".join(parts)


class ChatCompletionRequest(_Request):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    stop: str | list[str] | None = None
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, value: object) -> object:
        return _check_stop(value)


class TokenizeRequest(_Request):
    """vLLM's two /tokenize forms: a text `prompt`, or chat `messages` rendered through the
    model's chat template (as /v1/chat/completions renders them)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int]


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _check_stop(value: object) -> object:
    if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
        raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
    return value
