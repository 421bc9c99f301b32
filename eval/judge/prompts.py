"""Versioned judge prompts: ``prompts/<kind>_<version>.txt``.

The first line is ``VERSION: <kind>_<version>`` (checked against the file name, so a copied
file cannot silently keep the old version); the rest is a `string.Template` with ``${field}``
slots. A prompt's id (version + sha256 of the file) is part of every judge-cache key, so an
edited prompt never reuses verdicts given to the old text.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from eval.errors import EvalError

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PROMPT_KINDS = ("pairwise", "single")


@dataclass(frozen=True)
class JudgePrompt:
    kind: str
    version: str
    sha256: str
    template: string.Template

    @property
    def prompt_id(self) -> str:
        return f"{self.version}@{self.sha256[:12]}"

    def render(self, **fields: str) -> str:
        try:
            return self.template.substitute(fields)
        except KeyError as exc:
            raise EvalError("EVAL_JUDGE_PROMPT_INVALID",
                            f"prompt {self.version} needs field {exc}; give it or edit the "
                            "prompt file.") from exc


def load_prompt(kind: str, version: str, prompts_dir: Path = PROMPTS_DIR) -> JudgePrompt:
    path = prompts_dir / f"{kind}_{version}.txt"
    if kind not in PROMPT_KINDS or not path.is_file():
        raise EvalError("EVAL_JUDGE_PROMPT_MISSING",
                        f"no judge prompt {path}; eval.judge.prompt_version={version!r} needs "
                        f"{[f'{k}_{version}.txt' for k in PROMPT_KINDS]} in {prompts_dir}.")
    raw = path.read_bytes()
    header, _, body = raw.decode("utf-8").partition("\n")
    expected = f"VERSION: {kind}_{version}"
    if header.strip() != expected:
        raise EvalError("EVAL_JUDGE_PROMPT_INVALID",
                        f"{path}: first line is {header.strip()!r}, expected {expected!r}. "
                        "Bump the version in the file name and the header together.")
    return JudgePrompt(kind, f"{kind}_{version}", hashlib.sha256(raw).hexdigest(),
                       string.Template(body))
