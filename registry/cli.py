"""`shipyard verify models:/NAME@ALIAS`: check a registered model before trusting it.

Exit codes: 0 verified; 1 a check failed (its name, expected and found go to stderr);
2 bad usage (arguments, model URI or policy file).

Defaults follow the embedded local setup: MLflow at `$MLFLOW_TRACKING_URI` or
`sqlite:///$SHIPYARD_HOME/mlflow.db` (SHIPYARD_HOME defaults to ~/.shipyard), the public key
at `$SHIPYARD_HOME/keys/signing.pub`, and the policy `$SHIPYARD_HOME/keys/trust-policy.yaml`
(written when the local key pair was generated; it pins that key) or else
registry/default_policy.yaml (which pins no key). The public key is trusted only when the
policy pins its fingerprint. This entry point is the only place in `registry` that reads the
environment; `verify_model` takes every value as an argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from registry.errors import RegistryError
from registry.policy import load_policy
from registry.signing import PUBLIC_KEY_NAME
from registry.verify import verify_model

# Errors in what the user typed, not in the model: exit 2 like argparse does.
_USAGE_ERRORS = frozenset({"MODEL_URI_INVALID", "POLICY_INVALID", "EXPECTED_DIGEST_INVALID"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "verify":
        parser.print_help(sys.stderr)
        return 2
    return run_verify(args)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    home = Path(env.get("SHIPYARD_HOME") or Path.home() / ".shipyard").expanduser()
    parser = argparse.ArgumentParser(prog="shipyard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify a registered model's signature, provenance and policy",
        description="Download a model version, recompute its digest, check its signature "
        "and SLSA provenance, and apply the policy. Fail-closed.",
    )
    add_verify_arguments(verify, home=home, environ=env)
    return parser


def add_verify_arguments(
    parser: argparse.ArgumentParser, *, home: Path, environ: Mapping[str, str]
) -> None:
    """The `verify` arguments, for mounting under another CLI (`shipyard verify`)."""
    parser.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="policy YAML (default: the local trust policy $SHIPYARD_HOME/keys/"
        "trust-policy.yaml if it exists, else registry/default_policy.yaml)",
    )
    parser.add_argument(
        "--expected-digest",
        default=None,
        metavar="SHA256",
        help="fail unless the model's root digest is this one (sha256:<hex>), e.g. the digest "
        "a deploy request names",
    )
    parser.add_argument(
        "--tracking-uri",
        default=environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}",
        help="MLflow tracking + registry URI (default: %(default)s)",
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        default=home / "keys" / PUBLIC_KEY_NAME,
        help="PEM public key for key-mode signatures; trusted only when the policy pins its "
        "fingerprint (default: %(default)s)",
    )
    parser.set_defaults(keys_dir=home / "keys")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="keep the verified model files under DIR/model (default: a temporary dir)",
    )


def run_verify(args: argparse.Namespace) -> int:
    # MLflow draws download progress bars on stderr, where the verdict goes: keep it readable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        policy = load_policy(args.policy, keys_dir=args.keys_dir)
        result = verify_model(
            args.model_uri,
            tracking_uri=args.tracking_uri,
            policy=policy,
            public_key=args.public_key,
            download_dir=args.download_dir,
            expected_digest=args.expected_digest,
        )
    except RegistryError as exc:
        print(f"shipyard verify: FAILED {args.model_uri}", file=sys.stderr)
        if exc.check:
            print(f"  check:    {exc.check}", file=sys.stderr)
        print(f"  reason:   {exc.message}", file=sys.stderr)
        if exc.expected is not None or exc.found is not None:
            print(f"  expected: {exc.expected}", file=sys.stderr)
            print(f"  found:    {exc.found}", file=sys.stderr)
        print(f"  code:     {exc.code}", file=sys.stderr)
        return 2 if exc.code in _USAGE_ERRORS else 1
    print(
        f"shipyard verify: OK {result.model_uri} -> {result.registered_model_name} "
        f"version {result.version}\n  model digest: sha256:{result.model_digest}\n"
        f"  signing mode: {result.signing_mode}\n  builder: {result.builder_id}\n"
        f"  source: {result.source_repository}\n  policy: {policy.source}"
    )
    for check in result.checks:
        print(f"  [{check.status}] {check.name}: {check.detail}")
    if result.model_dir is not None:
        print(f"  verified files: {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
