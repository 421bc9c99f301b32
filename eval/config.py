"""`EvalConfig`: what the evaluate stage runs and the rules its gate applies.

Flat on purpose: a preset's ``eval:`` section maps one key to one field (unknown keys are
errors), and Flyte serializes it as a plain dataclass. "Unset" is None, never a falsy value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.errors import StageError
from eval.errors import EvalError
from eval.harness import MODEL_PATHS
from eval.judge.llmbar import SUBSETS as LLMBAR_SUBSETS
from eval.suite.ifeval import LM_EVAL_IFEVAL_MAX_GEN_TOKENS
from eval.suite.specs import SCORING_CHECK_TASK, TASK_SPECS
from registry.aliases import DEFAULT_CHAMPION_ALIAS
from training.pretrained import parse_source

ENGINE_KINDS = ("local", "vllm")
# The default task whose generated answers the judge compares (eval.judge_task; see
# eval/judge/run.py).
JUDGED_TASK = "shipyard_exact"
DEFAULT_TASKS = ("shipyard_scoring_check", "shipyard_mc", "shipyard_ppl", "shipyard_exact")


def _default_margins() -> dict[str, float]:
    # In each task's primary metric's units: accuracy points, and bits per byte.
    return {"shipyard_mc": 0.05, "shipyard_exact": 0.05, "shipyard_ppl": 0.05}


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
    model_path: str = "hf"
    completions_base_url: str | None = None
    # Engine the stage starts when it needs an endpoint and none is given: "local" (the
    # light OpenAI-compatible engine) or "vllm".
    serving_engine: str = "local"
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
    # Tasks compared with the champion, each with the largest loss it tolerates in its
    # primary metric's units (accuracy for mc/exact, bits per byte for ppl).
    non_inferiority_margins: dict[str, float] = field(default_factory=_default_margins)
    # Tasks the candidate must beat the champion on: the one-sided `confidence` lower bound
    # of the paired improvement of the primary metric must be above 0 (with a champion; the
    # first model has nothing to beat). Tasks here may also have a non-inferiority margin.
    must_improve: list[str] = field(default_factory=list)
    # One-sided confidence of the non-inferiority bounds; power of the reported minimum
    # detectable effect.
    confidence: float = 0.95
    power: float = 0.8
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 20240601
    # Fewest paired items a comparison needs; fewer fails the gate (it cannot show
    # non-inferiority on so little evidence).
    min_paired_items: int = 30
    # Absolute bounds on a task's primary metric, checked with or without a champion:
    # floors for higher-is-better metrics, ceilings for lower-is-better ones.
    hard_floors: dict[str, float] = field(default_factory=dict)
    hard_ceilings: dict[str, float] = field(default_factory=dict)

    # ---- LLM judge -----------------------------------------------------------------------
    # Where the judge comes from, at most one of three: any OpenAI-compatible server
    # (`judge_base_url`, root URL; /v1/chat/completions is appended); a local HF model
    # directory the stage serves with `serving_engine` (`judge_model_dir`); or a base-model
    # source ("package:smollm2-135m-instruct", "gguf:<file>", "dir:<directory>") provisioned
    # exactly as `base.source` is (training/pretrained.py: hash-pinned, converted once and
    # cached under SHIPYARD_HOME/base-models) and served the same way (`judge_source`).
    # None of them: no judge (reported as not configured).
    judge_base_url: str | None = None
    judge_model_dir: str | None = None
    judge_source: str | None = None
    # Further, DIFFERENT judge models that vote with the first one as a jury (PoLL-style
    # plurality of the pairwise verdicts): base-model sources the stage serves, and
    # OpenAI-compatible servers (model from /v1/models, key from `judge_api_key_env`). Two
    # members with the same weights are refused (EVAL_JUDGE_JURY_INVALID): one model with
    # several prompts is one judge, never reported as a jury.
    judge_jury_sources: list[str] = field(default_factory=list)
    judge_jury_base_urls: list[str] = field(default_factory=list)
    # The task whose generated answers the judge compares (one of the suite's generating
    # tasks: shipyard_exact, shipyard_skill, ifeval). Rubric grades need a reference answer,
    # so a task without one (ifeval) is compared pairwise only.
    judge_task: str = JUDGED_TASK
    # Model name sent to the judge server. None: the name the started engine serves, or the
    # first model listed by the server's /v1/models.
    judge_model: str | None = None
    # Environment variable holding the judge's API key (a Flyte secret is mounted into the
    # environment the same way). Unset or empty: no Authorization header.
    judge_api_key_env: str = "SHIPYARD_JUDGE_API_KEY"
    # Prompt files eval/judge/prompts/{pairwise,single}_<version>.txt; part of the cache key.
    judge_prompt_version: str = "v1"
    # Calibration set eval/judge/data/calibration_pairs_<version>.jsonl.
    judge_calibration_version: str = "v1"
    # Items judged (the first N paired items of `judge_task`).
    judge_max_items: int = 50
    judge_concurrency: int = 8
    judge_timeout_seconds: float = 60.0
    # Retries of one call on 429 / 5xx / timeouts, with exponential backoff from
    # `judge_backoff_seconds` (a Retry-After header wins when it is given).
    judge_max_retries: int = 4
    judge_backoff_seconds: float = 0.5
    judge_max_tokens: int = 4
    # Ask for top-5 logprobs of the verdict token (G-Eval-style expected scores).
    judge_request_logprobs: bool = True
    # Price per 1000 tokens, for the cost line of the report (0 for a local engine).
    judge_price_per_1k_prompt_tokens: float = 0.0
    judge_price_per_1k_completion_tokens: float = 0.0
    # The judge may gate only when its Cohen's kappa on the calibration set is at least
    # this, and its invalid-output rate at most `judge_max_invalid_output_rate`; otherwise
    # its results are reported as non-gating.
    judge_min_kappa: float = 0.6
    judge_max_invalid_output_rate: float = 0.1
    # Largest tolerated drop of the candidate's pairwise win rate below 0.5 (the length-
    # controlled win rate, see eval/judge/length_control.py).
    judge_non_inferiority_margin: float = 0.05
    # Human-labelled calibration (LLMBar, eval/judge/data/llmbar): the subsets the judge is
    # measured on, and the first N pairs of each (None: all 885 pairs, 1770 judge calls;
    # cached per judge, prompt and data, so it runs once per judge).
    judge_calibration_subsets: list[str] = field(
        default_factory=lambda: list(LLMBAR_SUBSETS))
    judge_calibration_limit_per_subset: int | None = None
    # The judge may gate only when, on those pairs, both answer orders name the same answer
    # at least this often (besides judge_min_kappa): below it, it judges positions.
    judge_min_order_agreement: float = 0.75
    # Digest of the judge's weights when the judge is a server (a model directory the stage
    # serves is digested itself): part of the judge's identity in the caches.
    judge_model_digest: str | None = None

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_tasks()
        self._check_numbers()

    @property
    def judge_enabled(self) -> bool:
        return any(s is not None for s in self.judge_sources)

    @property
    def judge_sources(self) -> tuple[str | None, str | None, str | None]:
        return self.judge_base_url, self.judge_model_dir, self.judge_source

    def _bad(self, name: str, rule: str) -> EvalError:
        return EvalError("EVAL_CONFIG_INVALID", f"eval.{name}={getattr(self, name)!r}: {rule}")

    def _check_choices(self) -> None:
        if self.model_path not in MODEL_PATHS:
            raise self._bad("model_path", f"must be one of {list(MODEL_PATHS)}.")
        if self.serving_engine not in ENGINE_KINDS:
            raise self._bad("serving_engine", f"must be one of {list(ENGINE_KINDS)}.")

    def _check_tasks(self) -> None:
        known = sorted(TASK_SPECS)
        if not self.tasks or set(self.tasks) - set(TASK_SPECS):
            raise self._bad("tasks", f"must be a non-empty list drawn from {known}.")
        if SCORING_CHECK_TASK not in self.tasks:
            raise self._bad("tasks", f"must include {SCORING_CHECK_TASK!r}: without it a broken "
                                     "logprob scorer would go unnoticed.")
        self._check_judge_sources()
        if not TASK_SPECS.get(self.judge_task, TASK_SPECS[SCORING_CHECK_TASK]).generates:
            generating = sorted(t for t, spec in TASK_SPECS.items() if spec.generates)
            raise self._bad("judge_task", f"must be a task that generates answers: one of "
                                          f"{generating}.")
        if self.judge_enabled and self.judge_task not in self.tasks:
            raise self._bad("tasks", f"must include {self.judge_task!r} (eval.judge_task) when "
                                     "a judge is configured: the judge compares the answers "
                                     "generated there.")
        for name in ("non_inferiority_margins", "hard_floors", "hard_ceilings", "must_improve"):
            extra = sorted(set(getattr(self, name)) - set(self.tasks))
            if extra:
                raise self._bad(name, f"names tasks {extra} that are not in eval.suite.")
        wrong_way = [t for t in self.hard_floors if not TASK_SPECS[t].higher_is_better]
        wrong_way += [t for t in self.hard_ceilings if TASK_SPECS[t].higher_is_better]
        if wrong_way:
            raise EvalError("EVAL_CONFIG_INVALID",
                            f"eval.hard_floors/hard_ceilings: {sorted(wrong_way)} bound the "
                            "wrong side; floors are for higher-is-better metrics (accuracy), "
                            "ceilings for lower-is-better ones (bits per byte).")
        if any(v < 0 or not math.isfinite(v) for v in self.non_inferiority_margins.values()):
            raise self._bad("non_inferiority_margins", "margins must be finite and >= 0.")

    def _check_judge_sources(self) -> None:
        if sum(s is not None for s in self.judge_sources) > 1:
            raise EvalError(
                "EVAL_CONFIG_INVALID",
                f"eval.judge_base_url={self.judge_base_url!r}, judge_model_dir="
                f"{self.judge_model_dir!r}, judge_source={self.judge_source!r}: set at most one "
                "(where the judge comes from); further judges go in judge_jury_sources / "
                "judge_jury_base_urls.")
        if (self.judge_jury_sources or self.judge_jury_base_urls) and not self.judge_enabled:
            raise self._bad("judge_jury_sources", "a jury needs a first judge: set "
                                                  "judge_source, judge_model_dir or "
                                                  "judge_base_url too.")
        named = [("judge_source", self.judge_source)] + [
            (f"judge_jury_sources[{i}]", s) for i, s in enumerate(self.judge_jury_sources)]
        for name, source in named:
            try:
                if source is not None:
                    parse_source(source)
            except StageError as exc:
                raise EvalError("EVAL_CONFIG_INVALID", exc.message.replace(
                    "base.source=", f"eval.{name}=", 1)) from exc
        for url in self.judge_jury_base_urls:
            if not url.startswith(("http://", "https://")):
                raise EvalError("EVAL_CONFIG_INVALID",
                                f"eval.judge_jury_base_urls: {url!r} is not an http(s) URL; give "
                                "the root URL of an OpenAI-compatible server.")

    def _check_numbers(self) -> None:
        for name in ("confidence", "power"):
            if not 0.5 < getattr(self, name) < 1:
                raise self._bad(name, "must be in (0.5, 1), e.g. 0.95 / 0.8.")
        for name in ("scoring_check_min_accuracy", "judge_max_invalid_output_rate",
                     "judge_min_order_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                raise self._bad(name, "must be in [0, 1].")
        if not -1 <= self.judge_min_kappa <= 1:
            raise self._bad("judge_min_kappa", "must be in [-1, 1] (Cohen's kappa).")
        if not 0 <= self.judge_non_inferiority_margin < 0.5:
            raise self._bad("judge_non_inferiority_margin", "must be in [0, 0.5).")
        if self.cache_max_bytes is not None and self.cache_max_bytes < 0:
            raise self._bad("cache_max_bytes", "must be >= 0, or None for no bound.")
        if not self.judge_calibration_subsets or set(self.judge_calibration_subsets) - set(
                LLMBAR_SUBSETS) or len(set(self.judge_calibration_subsets)) != len(
                self.judge_calibration_subsets):
            raise self._bad("judge_calibration_subsets",
                            f"must be a non-empty list of distinct names from "
                            f"{list(LLMBAR_SUBSETS)}.")
        if (self.judge_calibration_limit_per_subset is not None
                and self.judge_calibration_limit_per_subset <= 0):
            raise self._bad("judge_calibration_limit_per_subset",
                            "must be > 0, or None for every pair.")
        for name in ("limit_per_task", "ifeval_limit"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0, or None for every document.")
        for name in ("batch_size", "num_concurrent", "max_gen_tokens", "ifeval_max_gen_tokens",
                     "skill_max_gen_tokens", "bootstrap_resamples",
                     "min_paired_items", "judge_max_items", "judge_concurrency",
                     "judge_max_tokens", "judge_timeout_seconds",
                     "engine_ready_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0.")
        for name in ("judge_max_retries", "judge_backoff_seconds",
                     "judge_price_per_1k_prompt_tokens",
                     "judge_price_per_1k_completion_tokens"):
            if getattr(self, name) < 0:
                raise self._bad(name, "must be >= 0.")
