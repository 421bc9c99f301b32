"""`EvalConfig`: what the evaluate stage runs and the rules its gate applies.

Harness and champion keys sit directly in a preset's ``eval:`` section; the promotion gate's
bounds, margins and statistics in the nested section ``eval.gate`` (`GateConfig`,
eval/config_gate.py), the LLM judge's keys in ``eval.judge`` (`JudgeConfig`). Unknown keys are
errors at every level, and Flyte serializes them as plain (nested) dataclasses. Choice fields
are `Literal` types, which the config loader checks. "Unset" is None, never a falsy value.

The flat keys of earlier releases (``eval.judge_min_kappa``, ``eval.hard_ceilings``) still load
for one release, mapped onto ``eval.judge.min_kappa`` / ``eval.gate.hard_ceilings`` with a
deprecation line (`RENAMED_KEYS`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from common.errors import StageError
from eval.config_gate import TASK_FIELDS, GateConfig
from eval.errors import EvalError
from eval.harness import ModelPath
from eval.judge.llmbar import SUBSETS as LLMBAR_SUBSETS
from eval.suite.ifeval import LM_EVAL_IFEVAL_MAX_GEN_TOKENS
from eval.suite.specs import SCORING_CHECK_TASK, TASK_SPECS
from registry.aliases import DEFAULT_CHAMPION_ALIAS
from serving.engine import EngineKind
from training.pretrained import parse_source

# The suite tasks that generate answers, the ones a judge can compare (eval.judge.task;
# tests/eval/test_config_sections.py checks this is every generating task of TASK_SPECS).
JudgedTask = Literal["shipyard_exact", "shipyard_skill", "ifeval"]
# The default task whose generated answers the judge compares (see eval/judge/run.py).
JUDGED_TASK: JudgedTask = "shipyard_exact"
DEFAULT_TASKS = ("shipyard_scoring_check", "shipyard_mc", "shipyard_ppl", "shipyard_exact")


def _literal_fields(cls: type[Any]) -> dict[str, tuple[Any, ...]]:
    hints = typing.get_type_hints(cls)
    return {name: typing.get_args(hint) for name, hint in hints.items()
            if typing.get_origin(hint) is Literal}


def _check_literals(config: Any, prefix: str) -> None:
    """A config built in code (not by the loader, which checks this itself) holds one of its
    Literal fields' values too; the allowed values come from the type, nowhere else."""
    for name, choices in _literal_fields(type(config)).items():
        if getattr(config, name) not in choices:
            raise EvalError("EVAL_CONFIG_INVALID", f"{prefix}.{name}="
                                                   f"{getattr(config, name)!r}: must be one of "
                                                   f"{list(choices)}.")


@dataclass
class JudgeConfig:
    """The preset's ``eval.judge:`` section: where the LLM judge comes from, how it is called,
    and when its verdicts may gate."""

    # Where the judge comes from, at most one of three: any OpenAI-compatible server
    # (`base_url`, root URL; /v1/chat/completions is appended); a local HF model
    # directory the stage serves with `eval.serving_engine` (`model_dir`); or a base-model
    # source ("package:smollm2-135m-instruct", "gguf:<file>", "dir:<directory>") provisioned
    # exactly as `base.source` is (training/pretrained.py: hash-pinned, converted once and
    # cached under SHIPYARD_HOME/base-models) and served the same way (`source`).
    # None of them: no judge (reported as not configured).
    base_url: str | None = None
    model_dir: str | None = None
    source: str | None = None
    # Further, DIFFERENT judge models that vote with the first one as a jury (PoLL-style
    # plurality of the pairwise verdicts): base-model sources the stage serves, and
    # OpenAI-compatible servers (model from /v1/models, key from `api_key_env`). Two
    # members with the same weights are refused (EVAL_JUDGE_JURY_INVALID): one model with
    # several prompts is one judge, never reported as a jury.
    jury_sources: list[str] = field(default_factory=list)
    jury_base_urls: list[str] = field(default_factory=list)
    # The task whose generated answers the judge compares (one of the suite's generating
    # tasks: shipyard_exact, shipyard_skill, ifeval). Rubric grades need a reference answer,
    # so a task without one (ifeval) is compared pairwise only.
    task: JudgedTask = JUDGED_TASK
    # Model name sent to the judge server. None: the name the started engine serves, or the
    # first model listed by the server's /v1/models.
    model: str | None = None
    # Environment variable holding the judge's API key (a Flyte secret is mounted into the
    # environment the same way). Unset or empty: no Authorization header.
    api_key_env: str = "SHIPYARD_JUDGE_API_KEY"
    # Prompt files eval/judge/prompts/{pairwise,single}_<version>.txt; part of the cache key.
    prompt_version: str = "v1"
    # Calibration set eval/judge/data/calibration_pairs_<version>.jsonl.
    calibration_version: str = "v1"
    # Items judged (the first N paired items of `task`).
    max_items: int = 50
    concurrency: int = 8
    timeout_seconds: float = 60.0
    # Retries of one call on 429 / 5xx / timeouts, with exponential backoff from
    # `backoff_seconds` (a Retry-After header wins when it is given).
    max_retries: int = 4
    backoff_seconds: float = 0.5
    max_tokens: int = 4
    # Ask for top-5 logprobs of the verdict token (G-Eval-style expected scores).
    request_logprobs: bool = True
    # Price per 1000 tokens, for the cost line of the report (0 for a local engine).
    price_per_1k_prompt_tokens: float = 0.0
    price_per_1k_completion_tokens: float = 0.0
    # The judge may gate only when its Cohen's kappa on the calibration set is at least
    # this, and its invalid-output rate at most `max_invalid_output_rate`; otherwise
    # its results are reported as non-gating.
    min_kappa: float = 0.6
    max_invalid_output_rate: float = 0.1
    # Largest tolerated drop of the candidate's pairwise win rate below 0.5 (the length-
    # controlled win rate, see eval/judge/length_control.py).
    non_inferiority_margin: float = 0.05
    # Human-labelled calibration (LLMBar, eval/judge/data/llmbar): the subsets the judge is
    # measured on, and the first N pairs of each (None: all 885 pairs, 1770 judge calls;
    # cached per judge, prompt and data, so it runs once per judge).
    calibration_subsets: list[str] = field(
        default_factory=lambda: list(LLMBAR_SUBSETS))
    calibration_limit_per_subset: int | None = None
    # The judge may gate only when, on those pairs, both answer orders name the same answer
    # at least this often (besides `min_kappa`): below it, it judges positions.
    min_order_agreement: float = 0.75
    # Digest of the judge's weights when the judge is a server (a model directory the stage
    # serves is digested itself): part of the judge's identity in the caches.
    model_digest: str | None = None

    def __post_init__(self) -> None:
        _check_literals(self, "eval.judge")
        self._check_sources()
        self._check_numbers()

    @property
    def enabled(self) -> bool:
        return any(s is not None for s in self.sources)

    @property
    def sources(self) -> tuple[str | None, str | None, str | None]:
        return self.base_url, self.model_dir, self.source

    def _bad(self, name: str, rule: str) -> EvalError:
        return EvalError("EVAL_CONFIG_INVALID",
                         f"eval.judge.{name}={getattr(self, name)!r}: {rule}")

    def _check_sources(self) -> None:
        if sum(s is not None for s in self.sources) > 1:
            raise EvalError(
                "EVAL_CONFIG_INVALID",
                f"eval.judge.base_url={self.base_url!r}, model_dir={self.model_dir!r}, "
                f"source={self.source!r}: set at most one (where the judge comes from); "
                "further judges go in eval.judge.jury_sources / jury_base_urls.")
        if (self.jury_sources or self.jury_base_urls) and not self.enabled:
            raise self._bad("jury_sources", "a jury needs a first judge: set eval.judge.source, "
                                            "model_dir or base_url too.")
        named = [("source", self.source)] + [
            (f"jury_sources[{i}]", s) for i, s in enumerate(self.jury_sources)]
        for name, source in named:
            try:
                if source is not None:
                    parse_source(source)
            except StageError as exc:
                raise EvalError("EVAL_CONFIG_INVALID", exc.message.replace(
                    "base.source=", f"eval.judge.{name}=", 1)) from exc
        for url in self.jury_base_urls:
            if not url.startswith(("http://", "https://")):
                raise EvalError("EVAL_CONFIG_INVALID",
                                f"eval.judge.jury_base_urls: {url!r} is not an http(s) URL; give "
                                "the root URL of an OpenAI-compatible server.")

    def _check_numbers(self) -> None:
        for name in ("max_invalid_output_rate", "min_order_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                raise self._bad(name, "must be in [0, 1].")
        if not -1 <= self.min_kappa <= 1:
            raise self._bad("min_kappa", "must be in [-1, 1] (Cohen's kappa).")
        if not 0 <= self.non_inferiority_margin < 0.5:
            raise self._bad("non_inferiority_margin", "must be in [0, 0.5).")
        if not self.calibration_subsets or set(self.calibration_subsets) - set(
                LLMBAR_SUBSETS) or len(set(self.calibration_subsets)) != len(
                self.calibration_subsets):
            raise self._bad("calibration_subsets", f"must be a non-empty list of distinct names "
                                                   f"from {list(LLMBAR_SUBSETS)}.")
        if self.calibration_limit_per_subset is not None and self.calibration_limit_per_subset <= 0:
            raise self._bad("calibration_limit_per_subset", "must be > 0, or None for every pair.")
        for name in ("max_items", "concurrency", "max_tokens", "timeout_seconds"):
            if getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0.")
        for name in ("max_retries", "backoff_seconds", "price_per_1k_prompt_tokens",
                     "price_per_1k_completion_tokens"):
            if getattr(self, name) < 0:
                raise self._bad(name, "must be >= 0.")


@dataclass
class EvalConfig:
    # ---- harness -------------------------------------------------------------------------
    # Tasks of the suite (eval/suite/templates) to run. shipyard_scoring_check must stay: it is
    # what proves the log-probability scoring itself works.
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    # Documents per task: the first N of each task file, the same N for candidate and
    # champion so they pair. None: every document.
    limit_per_task: int | None = 100
    # "hf": the model directory loaded in-process (lm-eval HFLM). "local-completions":
    # lm-eval's OpenAI-compatible backend against `completions_base_url`, or, when that is
    # None, against a `serving_engine` the stage starts on the model directory.
    model_path: ModelPath = "hf"
    completions_base_url: str | None = None
    # Engine the stage starts when it needs an endpoint and none is given: "local" (the
    # light OpenAI-compatible engine) or "vllm".
    serving_engine: EngineKind = "local"
    # Seconds to wait for a started engine to become ready.
    engine_ready_timeout_seconds: float = 300.0
    # vLLM engines the stage starts run without torch.compile: they live for one evaluation,
    # and on CPU compiling costs more start-up time than it saves (docs/benchmarks.md).
    engine_enforce_eager: bool = True
    # The vLLM CPU venv for `serving_engine: vllm` (as deploy.vllm_venv_dir); None: the default
    # under SHIPYARD_HOME, created on first use.
    vllm_venv_dir: str | None = None
    # hf path: sequences per forward pass. local-completions: requests in flight at once.
    batch_size: int = 8
    num_concurrent: int = 4
    # Tokens generated per shipyard_exact item (the answers are a few tokens).
    max_gen_tokens: int = 16
    # Tokens generated per IFEval prompt. lm-eval's own task allows 1280; a lower cap is far
    # cheaper on CPU but fails instructions that need long answers ("at least 300 words"),
    # so it changes the scores: the report records it.
    ifeval_max_gen_tokens: int = LM_EVAL_IFEVAL_MAX_GEN_TOKENS
    # IFEval prompts evaluated: the first N of the 541, the same N for candidate and champion.
    # None: `limit_per_task` applies to IFEval too.
    ifeval_limit: int | None = None
    # Tokens generated per shipyard_skill item (the final assistant turn of a conversation).
    skill_max_gen_tokens: int = 256
    # Prompt through the model's chat template (lm-eval's apply_chat_template). None: when the
    # model's tokenizer has one (a model without one keeps the text prompts). True: required
    # (a model without one is refused). False: never.
    use_chat_template: bool | None = None
    # System message for chat-template prompts that have none of their own. None: the
    # template's default (SmolLM2's inserts its own).
    system_instruction: str | None = None
    # shipyard_scoring_check accuracy below this fails the stage (EVAL_SCORING_CHECK_FAILED): the
    # harness's logprob scoring is broken, so no other number can be trusted.
    scoring_check_min_accuracy: float = 0.95
    # Root of the lm-eval response cache and the judge-call cache (one sub-directory per
    # model digest). None: <SHIPYARD_HOME>/eval-cache.
    cache_dir: str | None = None
    # Bytes the whole eval cache may hold after a run; least recently used entries (a model
    # digest's responses, a judge call) go first, the models just evaluated never. None: no
    # bound.
    cache_max_bytes: int | None = 10 * 1024**3

    # ---- gate ----------------------------------------------------------------------------
    # MLflow registered model whose `champion_alias` version is the baseline. None: never
    # compare, absolute floors only.
    registered_model_name: str | None = "shipyard-tiny"
    # Not a preset key of its own: tasks/resolve.py sets it from register.champion_alias, the
    # one alias setting evaluate, register and deploy share.
    champion_alias: str = DEFAULT_CHAMPION_ALIAS
    # The champion is a baseline only once registry.verify_model accepts it (signature,
    # provenance, policy), as deploy does before serving it. Policy YAML; None:
    # <SHIPYARD_HOME>/keys/trust-policy.yaml (pins the local key) if it exists, else
    # registry/default_policy.yaml. Public key for key-mode signatures (trusted only when the
    # policy pins its fingerprint); None: <SHIPYARD_HOME>/keys/signing.pub.
    policy_path: str | None = None
    public_key_path: str | None = None
    # The statistical promotion gate's bounds, margins and statistics: the nested section
    # eval.gate (eval/config_gate.py).
    gate: GateConfig = field(default_factory=GateConfig)

    # ---- LLM judge: the nested section eval.judge ---------------------------------------
    judge: JudgeConfig = field(default_factory=JudgeConfig)


    def __post_init__(self) -> None:
        _check_literals(self, "eval")
        self._check_tasks()
        self._check_numbers()

    def _bad(self, name: str, rule: str) -> EvalError:
        return EvalError("EVAL_CONFIG_INVALID", f"eval.{name}={getattr(self, name)!r}: {rule}")

    def _check_tasks(self) -> None:
        known = sorted(TASK_SPECS)
        if not self.tasks or set(self.tasks) - set(TASK_SPECS):
            raise self._bad("tasks", f"must be a non-empty list drawn from {known}.")
        if SCORING_CHECK_TASK not in self.tasks:
            raise self._bad("tasks", f"must include {SCORING_CHECK_TASK!r}: without it a broken "
                                     "logprob scorer would go unnoticed.")
        if self.judge.enabled and self.judge.task not in self.tasks:
            raise self._bad("tasks", f"must include {self.judge.task!r} (eval.judge.task) when "
                                     "a judge is configured: the judge compares the answers "
                                     "generated there.")
        for name in TASK_FIELDS:
            extra = sorted(set(getattr(self.gate, name)) - set(self.tasks))
            if extra:
                raise EvalError("EVAL_CONFIG_INVALID",
                                f"eval.gate.{name}={getattr(self.gate, name)!r}: names tasks "
                                f"{extra} that are not in eval.tasks.")

    def _check_numbers(self) -> None:
        if not 0 <= self.scoring_check_min_accuracy <= 1:
            raise self._bad("scoring_check_min_accuracy", "must be in [0, 1].")
        if self.cache_max_bytes is not None and self.cache_max_bytes < 0:
            raise self._bad("cache_max_bytes", "must be >= 0, or None for no bound.")
        for name in ("limit_per_task", "ifeval_limit"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0, or None for every document.")
        for name in ("batch_size", "num_concurrent", "max_gen_tokens", "ifeval_max_gen_tokens",
                     "skill_max_gen_tokens", "engine_ready_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0.")


# The flat keys of earlier releases, accepted for one release by the config loader
# (common/config.py `build_config(..., renamed=)`), which moves each to its place in a nested
# section with a deprecation line: the judge's (eval.judge_min_kappa -> eval.judge.min_kappa)
# and the gate's (eval.hard_ceilings -> eval.gate.hard_ceilings).
RENAMED_KEYS: dict[str, str] = {
    **{f"judge_{f.name}": f"judge.{f.name}" for f in fields(JudgeConfig)},
    **{f.name: f"gate.{f.name}" for f in fields(GateConfig)},
}
