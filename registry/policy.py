"""Verification policy: who may sign, which builders, source and eval outcome a deployable
model needs, and how large it may be.

A policy is a YAML file; unknown keys are errors, so a typo cannot silently switch a check
off. A requirement key left out (or null) means that requirement is not enforced, and the
verification result says so. Trust is never left out: a signature verifies only against a
key the policy pins by fingerprint or the Sigstore identity it names.

    allowed_builder_ids: [urn:shipyard:builder:flyte-local]   # required, non-empty
    expected_source_repository: https://github.com/ORG/REPO   # or null
    required_eval_gate: PASS                                  # or null
    required_gate_modes: [champion]                           # champion, absolute; or null
    required_eval_checks: [floor:shipyard_mc]                 # gate checks that must pass
    allowed_signing_modes: [key]                              # key, sigstore or both
    trusted_key_fingerprints: [sha256:<64 hex>]               # key mode: the pinned keys
    sigstore_identity: https://github.com/ORG/REPO/.github/workflows/main.yml@refs/heads/main
    sigstore_oidc_issuer: https://token.actions.githubusercontent.com
    sigstore_staging: false
    max_model_bytes: 53687091200                              # refuse larger downloads
    allowed_import_sources: [package:smollm2-135m-instruct]   # imported models; [] : none
    allowed_base_models: [sha256:<64 hex>]                    # base digests; null: any

`ensure_key_pair` writes a local trust policy, `<keys dir>/trust-policy.yaml`, that pins the
local key; `load_policy(None, keys_dir=...)` reads it in place of the packaged default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.digests import is_sha256
from common.fs import atomic_write_text
from registry.errors import RegistryError
from registry.identity import SigstoreIdentity

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")
# Written by `ensure_key_pair` next to the key pair it pins (registry.signing).
LOCAL_TRUST_POLICY_NAME = "trust-policy.yaml"
EVAL_GATE_OUTCOMES = ("PASS",)
GATE_MODES = ("champion", "absolute")
SIGNING_MODES = ("key", "sigstore")
DEFAULT_MAX_MODEL_BYTES = 50 * 1024**3  # 50 GiB: larger than any model this pipeline trains


def _is_fingerprint(value: object) -> bool:
    """`sha256:<64 lowercase hex>`: a public key's fingerprint."""
    return isinstance(value, str) and value.startswith("sha256:") and is_sha256(value[7:])


@dataclass(frozen=True)
class Policy:
    # Builders trusted to produce deployable models (SLSA runDetails.builder.id, exact match).
    allowed_builder_ids: tuple[str, ...]
    # Repository the source dependency must come from; None: not enforced.
    expected_source_repository: str | None = None
    # Eval gate outcome the signed eval attestation must record; None: not enforced.
    required_eval_gate: str | None = None
    # Gate modes accepted ("champion": compared with the champion, "absolute": bounds only),
    # read from the signed eval attestation; None: not enforced.
    required_gate_modes: tuple[str, ...] | None = None
    # Gate checks (e.g. "floor:shipyard_mc", "non_inferiority:shipyard_mc",
    # "judge_win_rate") that the signed eval attestation must list as passed; None: none.
    required_eval_checks: tuple[str, ...] | None = None
    # Keyless signatures must come from this OIDC identity and issuer (sigstore mode).
    sigstore_identity: str | None = None
    sigstore_oidc_issuer: str | None = None
    sigstore_staging: bool = False
    # Signing modes a model may use ("key", "sigstore"); each still needs its trust root
    # (pinned keys / Sigstore identity), so None (both) trusts nothing more by itself.
    allowed_signing_modes: tuple[str, ...] | None = None
    # Key mode: the only public keys trusted, as `sha256:<hex>` fingerprints (sha256 of the
    # PEM SubjectPublicKeyInfo, the `publicKey.hint` model-signing writes). Empty: none.
    trusted_key_fingerprints: tuple[str, ...] = ()
    # Largest model version (model files plus attestations, bytes) that is downloaded.
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    # Imported models (a base model registered as it is, registry/imports.py: never trained
    # or gated by Shipyard) are refused unless their provenance's source is listed here, e.g.
    # "package:smollm2-135m-instruct". Default deny. A listed import needs no eval evidence:
    # listing it is the decision to trust that model as it was published.
    allowed_import_sources: tuple[str, ...] = ()
    # Base models allowed, as `sha256:<hex>` model root digests: a fine-tune's provenance
    # must name one of them as its base, an imported model must be one. None: any (and none).
    allowed_base_models: tuple[str, ...] | None = None
    # Where the policy was read from, for messages.
    source: str = field(default="<inline>", compare=False)

    def __post_init__(self) -> None:
        for name in ("expected_source_repository", "sigstore_identity", "sigstore_oidc_issuer"):
            if not isinstance(getattr(self, name), str | None):
                raise RegistryError(
                    "POLICY_INVALID", f"policy {self.source}: {name} must be a string or null."
                )
        if not isinstance(self.sigstore_staging, bool):
            raise RegistryError(
                "POLICY_INVALID", f"policy {self.source}: sigstore_staging must be true or false."
            )
        if not self.allowed_builder_ids or not all(
            isinstance(b, str) and b for b in self.allowed_builder_ids
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: allowed_builder_ids must list at least one builder id "
                "(e.g. urn:shipyard:builder:flyte-local).",
            )
        if self.required_eval_gate not in (None, *EVAL_GATE_OUTCOMES):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: required_eval_gate={self.required_eval_gate!r}: "
                f"use one of {list(EVAL_GATE_OUTCOMES)} or null.",
            )
        self._check_eval_requirements()
        self._check_trust_keys()
        if (self.sigstore_identity is None) != (self.sigstore_oidc_issuer is None):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: set both sigstore_identity and sigstore_oidc_issuer, "
                "or neither.",
            )

    def _check_eval_requirements(self) -> None:
        modes = self.required_gate_modes
        if modes is not None and (
            not isinstance(modes, tuple) or not modes or not set(modes) <= set(GATE_MODES)
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: required_gate_modes={modes!r}: list one or both of "
                f"{list(GATE_MODES)}, or leave it out.",
            )
        checks = self.required_eval_checks
        if checks is not None and (
            not isinstance(checks, tuple)
            or not checks
            or not all(isinstance(c, str) and c for c in checks)
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: required_eval_checks={checks!r}: list gate check names "
                "(e.g. floor:shipyard_mc, non_inferiority:shipyard_mc, judge_win_rate), or "
                "leave it out.",
            )

    @property
    def requires_eval(self) -> bool:
        """Whether any requirement reads the signed eval attestation."""
        return any(
            value is not None
            for value in (
                self.required_eval_gate, self.required_gate_modes, self.required_eval_checks
            )
        )

    def _check_trust_keys(self) -> None:
        modes = self.allowed_signing_modes
        if modes is not None and (not modes or not set(modes) <= set(SIGNING_MODES)):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: allowed_signing_modes={list(modes)!r}: list one or "
                f"both of {list(SIGNING_MODES)}, or leave it out.",
            )
        bad = [f for f in self.trusted_key_fingerprints if not _is_fingerprint(f)]
        if bad:
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: trusted_key_fingerprints {bad!r}: write each as "
                "sha256:<64 lowercase hex> (printed when the key pair is generated).",
            )
        if not isinstance(self.allowed_import_sources, tuple) or not all(
            isinstance(s, str) and s.strip() for s in self.allowed_import_sources
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: allowed_import_sources="
                f"{self.allowed_import_sources!r}: list base model sources (e.g. "
                "package:smollm2-135m-instruct), or [] to refuse every imported model.",
            )
        bases = self.allowed_base_models
        if bases is not None and (
            not isinstance(bases, tuple) or not bases
            or not all(_is_fingerprint(b) for b in bases)
        ):
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: allowed_base_models={bases!r}: list base model root "
                "digests as sha256:<64 lowercase hex> (the base's model_digest, shown by "
                "`shipyard verify`), or leave it out to allow any base.",
            )
        size = self.max_model_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise RegistryError(
                "POLICY_INVALID",
                f"policy {self.source}: max_model_bytes={size!r} must be a positive integer "
                "(bytes).",
            )

    @property
    def signing_modes(self) -> tuple[str, ...]:
        """The modes a model may be signed in (None allows both, each with its trust root)."""
        return SIGNING_MODES if self.allowed_signing_modes is None else self.allowed_signing_modes

    @property
    def sigstore(self) -> SigstoreIdentity | None:
        if self.sigstore_identity is None or self.sigstore_oidc_issuer is None:
            return None
        return SigstoreIdentity(
            self.sigstore_identity, self.sigstore_oidc_issuer, self.sigstore_staging
        )


def load_policy(path: Path | str | None = None, *, keys_dir: Path | None = None) -> Policy:
    """Read a policy file. None reads the local trust policy in `keys_dir` (written when the
    local key pair was generated) when there is one, else the packaged default, which pins
    no key."""
    policy_path = Path(path) if path is not None else default_policy_path(keys_dir)
    try:
        raw = yaml.safe_load(policy_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError("POLICY_INVALID", f"cannot read policy {policy_path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryError("POLICY_INVALID", f"policy {policy_path}: expected a mapping.")
    return policy_from_dict(raw, source=str(policy_path))


def pin_local_key(keys_dir: Path, fingerprint: str) -> Path:
    """Pin `fingerprint` (sha256:<hex>) in `keys_dir`'s local trust policy, creating it from
    the packaged default when absent; returns its path. Written 0600, atomically."""
    path = Path(keys_dir).expanduser() / LOCAL_TRUST_POLICY_NAME
    source = path if path.is_file() else DEFAULT_POLICY_PATH
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError("POLICY_INVALID", f"cannot read policy {source}: {exc}") from exc
    policy = policy_from_dict(raw, source=str(source))  # validate before extending it
    if fingerprint in policy.trusted_key_fingerprints:
        return path
    raw["trusted_key_fingerprints"] = [*policy.trusted_key_fingerprints, fingerprint]
    if "key" not in policy.signing_modes:
        raw["allowed_signing_modes"] = [*policy.signing_modes, "key"]
    text = (
        "# Local trust policy: the packaged default plus the key(s) generated on this machine.\n"
        "# `shipyard verify`, evaluate and deploy use it when no policy is given. Edit the\n"
        "# pinned fingerprints here to trust or distrust a key; a key pair file by itself is\n"
        "# no trust root.\n"
        "# allowed_import_sources: base models trusted as they were published (imported, not\n"
        "# trained or gated here), e.g. the first champion; set [] to refuse every import.\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    policy_from_dict(yaml.safe_load(text), source=str(path))
    atomic_write_text(path, text)
    return path


def default_policy_path(keys_dir: Path | None) -> Path:
    local = Path(keys_dir).expanduser() / LOCAL_TRUST_POLICY_NAME if keys_dir else None
    return local if local is not None and local.is_file() else DEFAULT_POLICY_PATH


def policy_from_dict(raw: dict[str, Any], *, source: str = "<inline>") -> Policy:
    known = {f.name for f in dataclasses.fields(Policy)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RegistryError(
            "POLICY_INVALID",
            f"policy {source}: unknown key(s) {unknown}. Known keys: {sorted(known)}.",
        )
    builders = raw.get("allowed_builder_ids") or []
    if isinstance(builders, str):
        builders = [builders]
    values = {**raw, "allowed_builder_ids": tuple(builders)}
    list_keys = ("allowed_signing_modes", "trusted_key_fingerprints", "required_gate_modes",
                 "required_eval_checks", "allowed_import_sources", "allowed_base_models")
    for key in list_keys:
        if isinstance(values.get(key), str):
            values[key] = (values[key],)
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    if values.get("trusted_key_fingerprints") is None:
        values.pop("trusted_key_fingerprints", None)
    if values.get("max_model_bytes") is None:
        values.pop("max_model_bytes", None)
    if values.get("allowed_import_sources") is None:  # null: no import allowed, as [] is
        values.pop("allowed_import_sources", None)
    return Policy(**values, source=source)
