"""`RegisterConfig`: how the `register` stage names, signs and attests a model."""

from __future__ import annotations

from dataclasses import dataclass

from registry.aliases import DEFAULT_CHAMPION_ALIAS, check_champion_alias
from registry.errors import RegistryError
from registry.policy import SIGNING_MODES


@dataclass
class RegisterConfig:
    # MLflow registered model that receives a new version (alias `challenger`).
    registered_model_name: str = "shipyard-tiny"
    # MLflow alias naming the version that serves users: `evaluate` compares against it,
    # `deploy` moves it after a passed canary, `register` never puts `challenger` on it. The
    # one place the preset sets it: tasks/resolve.py hands this value to the eval and deploy
    # configs (setting eval.champion_alias or deploy.champion_alias is an error).
    champion_alias: str = DEFAULT_CHAMPION_ALIAS
    # MLflow experiment of the registration run, used only when the training run is unknown;
    # otherwise the registration run is nested under the training run, in its experiment.
    experiment_name: str = "shipyard"
    # "key": a local ECDSA P-256 key pair, generated on first use in `key_dir` (laptops).
    # "sigstore": keyless Sigstore signing with the ambient OIDC identity (GitHub Actions
    # with `permissions: id-token: write`); needs network access to Fulcio and Rekor.
    signing_mode: str = "key"
    # Directory holding the key pair in key mode; None means the settings' keys directory
    # (`$SHIPYARD_HOME/keys`).
    key_dir: str | None = None
    # Key mode: may a missing key pair be generated (and pinned in the local trust policy)?
    # True on a laptop. Set false wherever a throwaway key must never sign, e.g. on a Flyte
    # cluster: there the key is mounted (a Kubernetes secret at key_dir) or signing_mode is
    # 'sigstore', and a missing key fails with KEY_GENERATION_DISABLED.
    allow_key_generation: bool = True
    # Sigstore mode: the identity the CI signs as (for GitHub Actions the workflow ref,
    # e.g. https://github.com/ORG/REPO/.github/workflows/main.yml@refs/heads/main) and its
    # OIDC issuer (https://token.actions.githubusercontent.com). Used to check the fresh
    # signatures before the version is published; both are required in sigstore mode.
    sigstore_identity: str | None = None
    sigstore_oidc_issuer: str | None = None
    # Use Sigstore's staging instance (test signatures only).
    sigstore_staging: bool = False
    # Verification policy YAML (see registry/policy.py) the new version must pass before it
    # gets the `challenger` alias; None trusts exactly the builder that is running.
    policy_path: str | None = None
    # Source repository recorded in the provenance; None means the checkout's
    # `remote.origin.url`, or its file:// URI when it has no remote.
    source_repository: str | None = None
    # SLSA `runDetails.builder.id`; None derives it from the Flyte execution
    # (urn:shipyard:builder:flyte-local, or urn:shipyard:builder:flyte:PROJECT:DOMAIN).
    # CI sets it to the GitHub Actions workflow ref.
    builder_id: str | None = None
    # Container image of a remote run, by digest (REGISTRY/IMAGE@sha256:...); recorded as a
    # resolved dependency. None for local runs.
    container_image: str | None = None

    def __post_init__(self) -> None:
        check_champion_alias(self.champion_alias)
        if self.signing_mode not in SIGNING_MODES:
            raise RegistryError(
                "CONFIG_INVALID",
                f"register.signing_mode={self.signing_mode!r}: must be one of "
                f"{list(SIGNING_MODES)} ('key' locally, 'sigstore' in CI).",
            )
        if not self.registered_model_name.strip():
            raise RegistryError(
                "CONFIG_INVALID", "register.registered_model_name is empty: give the model a name."
            )
        if self.signing_mode == "sigstore" and not (
            self.sigstore_identity and self.sigstore_oidc_issuer
        ):
            raise RegistryError(
                "CONFIG_INVALID",
                "register.signing_mode='sigstore' needs register.sigstore_identity and "
                "register.sigstore_oidc_issuer (for GitHub Actions: the workflow ref and "
                "https://token.actions.githubusercontent.com).",
            )
        if self.container_image is not None and "@sha256:" not in self.container_image:
            raise RegistryError(
                "CONFIG_INVALID",
                f"register.container_image={self.container_image!r}: pin the image by digest "
                "(REGISTRY/IMAGE@sha256:...), a tag is not an identity.",
            )
