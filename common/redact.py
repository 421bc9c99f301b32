"""Credentials out of everything Shipyard writes: one helper for logs, console lines, reports,
Flyte decks, MLflow params and tags, decision records, deployment history and attestations.

Credentials reach Shipyard inside URIs: a tracking URI ``https://user:secret@mlflow.example/``,
a judge base URL ``https://judge.example/v1?api_key=...``, a pre-signed data or checkpoint URI
``s3://bucket/x?X-Amz-Signature=...``, a git remote ``https://ghp_token@github.com/...``.
What is removed, wherever it appears in a string (inside free text, JSON or HTML too):

- the password of a URI's user-info (``scheme://user:password@host`` -> ``scheme://***@host``),
  and a user-info without a password on http(s) (a token used as the user name); an ssh-style
  user name alone (``ssh://git@host``) is no secret and stays;
- the value of a query parameter whose name says it is a credential (token, secret,
  password, api key, signature, credential, ``sig``, ``key``, ``auth``), also when the ``&``
  before it was HTML-escaped to ``&amp;``.

Host, path and the other query parameters stay, so a redacted URI still says where it points.
Redacting is idempotent and never raises.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, TypeVar

REDACTED = "***"

T = TypeVar("T")

# scheme://user[:password]@ : the password may hold '@' (the last '@' before the path ends it)
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<user>[^\s/?#@\"'<>:]*)(?::(?P<password>[^\s/?#\"'<>]*))?@")
_QUERY_PARAM = re.compile(
    r"(?P<lead>[?&;](?:amp;)?)(?P<key>[A-Za-z0-9_.\-]+)=(?P<value>[^&#;\s\"'<>]*)")
_SECRET_KEY = re.compile(
    r"(?i)^(?:[a-z0-9_.\-]*(?:token|secret|passw(?:or)?d|pwd|api[_\-]?key|signature|"
    r"credential)[a-z0-9_.\-]*|key|sig|auth|authorization|access[_\-]?key)$")
_TOKEN_AS_USER_SCHEMES = ("http://", "https://")


def redact_text(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ``***``."""
    if "@" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _QUERY_PARAM.sub(_query_param, text)
    return text


def redact(value: T) -> T:
    """`value` with every string in it redacted: a str, or mappings, lists and tuples of them
    (keys too); anything else is returned as it is. For JSON documents and params dicts."""
    return _redact_any(value)


def _redact_any(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {_redact_any(k): _redact_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_any(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_any(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message (arguments merged in) and its traceback text
    are redacted before any formatter sees them. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as usual
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _userinfo(match: re.Match[str]) -> str:
    scheme = match["scheme"]
    if match["password"] is None and not scheme.lower().startswith(_TOKEN_AS_USER_SCHEMES):
        return match[0]  # ssh://git@host: a user name, no credential
    if match["user"] == REDACTED and match["password"] is None:
        return match[0]  # already redacted
    return f"{scheme}{REDACTED}@"


def _query_param(match: re.Match[str]) -> str:
    if not _SECRET_KEY.match(match["key"]) or match["value"] in ("", REDACTED):
        return match[0]
    return f"{match['lead']}{match['key']}={REDACTED}"
