"""`shipyard verify models:/NAME@ALIAS`: check a registered model before trusting it.

Exit codes: 0 verified; 1 a check failed (its name, expected and found go to stderr);
2 bad usage (arguments, model URI or policy file).

Defaults follow the embedded local setup: MLflow at `$MLFLOW_TRACKING_URI` or
`sqlite:///$SHIPYARD_HOME/mlflow.db` (SHIPYARD_HOME defaults to ~/.shipyard), the public key
at `$SHIPYARD_HOME/keys/signing.pub`, and the policy `$SHIPYARD_HOME/keys/trust-policy.yaml`
(written when the local key pair was generated; it pins that key) or else
registry/default_policy.yaml (which pins no key). The public key is trusted only when the
policy pins its fingerprint. This entry point is the only place in `registry` that looks at the
environment, through `common.settings.load_settings` (where every setting is read);
`verify_model` takes every value as an argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from common.layout import HomeLayout
from common.settings import load_settings, mlflow_tracking_uri
from registry.errors import RegistryError

# `shipyard verify --help` needs none of MLflow or model-signing: the verifier, the policy
# loader and the signing code load inside the commands.
PUBLIC_KEY_NAME = "signing.pub"  # registry.signing.PUBLIC_KEY_NAME (a test keeps them equal)

# Errors in what the user typed, not in the model: exit 2 like argparse does.
_USAGE_ERRORS = frozenset({"MODEL_URI_INVALID", "POLICY_INVALID", "EXPECTED_DIGEST_INVALID"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "ci-subjects":
        return run_ci_subjects(args)
    if args.command == "ci-verify":
        return run_ci_verify(args)
    if args.command == "pin-key":
        return run_pin_key(args)
    return run_verify(args)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    home = load_settings(env).home
    parser = argparse.ArgumentParser(prog="shipyard", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify a registered model's signature, provenance and policy",
        description="Download a model version, recompute its digest, check its signature "
        "and SLSA provenance, and apply the policy. Fail-closed.",
    )
    add_verify_arguments(verify, home=home, environ=env)
    subjects = commands.add_parser(
        "ci-subjects",
        help="CI: verify a version, then write the digests the isolated signing job signs",
        description="Run the full verification of a registered version, then write the "
        "subjects file (model name, version, root digest; sha256 of its signed provenance and "
        "eval attestation) that the keyless signing job turns into a statement.",
    )
    add_verify_arguments(subjects, home=home, environ=env)
    subjects.add_argument("--out", type=Path, required=True, help="subjects JSON to write")
    ci_verify = commands.add_parser(
        "ci-verify",
        help="CI: check the keyless Sigstore bundle the signing job made",
        description="Verify a Sigstore bundle (cosign attest-blob --statement) against the "
        "workflow identity, then check its statement binds the subjects file.",
    )
    ci_verify.add_argument("--bundle", type=Path, required=True)
    ci_verify.add_argument("--subjects", type=Path, required=True)
    ci_verify.add_argument("--identity", required=True,
                           help="certificate identity, e.g. https://github.com/ORG/REPO/"
                           ".github/workflows/ci.yml@refs/heads/main")
    ci_verify.add_argument("--issuer", default="https://token.actions.githubusercontent.com")
    ci_verify.add_argument("--repository", default=None,
                           help="expected source repository URL in the statement")
    ci_verify.add_argument("--commit", default=None, help="expected source commit")
    ci_verify.add_argument("--staging", action="store_true",
                           help="Sigstore's staging instance (test signatures)")
    pin = commands.add_parser(
        "pin-key",
        help="trust this machine's signing key: pin it in the local trust policy",
        description="Pin the fingerprint of $SHIPYARD_HOME/keys/signing.key in "
        "$SHIPYARD_HOME/keys/trust-policy.yaml. A key generated when the policy already pins "
        "other keys is never pinned by itself: this is the explicit step.")
    pin.add_argument("--keys-dir", type=Path, default=HomeLayout(home).keys_dir)
    return parser


def run_pin_key(args: argparse.Namespace) -> int:
    from registry.policy import pin_local_key
    from registry.signing import ensure_key_pair

    try:
        # the public key is derived from the private one (never a .pub file laid beside it)
        pair = ensure_key_pair(args.keys_dir, allow_generation=False)
        fingerprint = f"sha256:{pair.fingerprint}"
        path = pin_local_key(args.keys_dir, fingerprint)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"pinned {fingerprint} in {path}")
    return 0


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
        default=mlflow_tracking_uri(environ, home),
        help="MLflow tracking + registry URI (default: %(default)s)",
    )
    parser.add_argument(
        "--public-key",
        type=Path,
        default=HomeLayout(home).keys_dir / PUBLIC_KEY_NAME,
        help="PEM public key for key-mode signatures; trusted only when the policy pins its "
        "fingerprint (default: %(default)s)",
    )
    parser.set_defaults(keys_dir=HomeLayout(home).keys_dir)
    parser.add_argument("--json", action="store_true",
                        help="print JSON for scripts: the result, or {\"error\": {...}} when "
                        "a check fails (also on stdout)")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="keep the verified model files under DIR/model (default: a temporary dir)",
    )


def run_ci_subjects(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from registry import attest
    from registry import eval_attestation as eval_att
    from registry.ci_provenance import ci_subjects

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="shipyard-ci-subjects-") as tmp:
        try:
            from registry.policy import load_policy
            from registry.verify import verify_model

            policy = load_policy(args.policy, keys_dir=args.keys_dir)
            result = verify_model(args.model_uri, tracking_uri=args.tracking_uri,
                                  policy=policy, public_key=args.public_key,
                                  download_dir=Path(tmp),
                                  expected_digest=args.expected_digest)
            attestations = Path(tmp) / "attestations"
            provenance = (attestations / attest.KEY_PROVENANCE_FILE
                          if result.signing_mode == "key"
                          else attestations / attest.SIGSTORE_PROVENANCE_FILE)
            evaluation = attestations / eval_att.file_name(result.signing_mode)
            subjects = ci_subjects(
                model_name=result.registered_model_name, model_version=result.version,
                model_digest=result.model_digest, provenance_file=provenance,
                eval_attestation_file=evaluation if evaluation.is_file() else None,
            )
        except RegistryError as exc:
            return _report_failure(f"shipyard ci-subjects: FAILED {args.model_uri}", exc)
    args.out.write_text(json.dumps(subjects, indent=2, sort_keys=True) + "\n")
    print(f"shipyard ci-subjects: {result.registered_model_name} version {result.version} "
          f"sha256:{result.model_digest} -> {args.out}")
    return 0


def run_ci_verify(args: argparse.Namespace) -> int:
    import json

    from registry.ci_provenance import check_ci_statement
    from registry.dsse import verify_statement
    from registry.signing import SigstoreIdentity

    try:
        subjects = json.loads(args.subjects.read_text())
        statement = verify_statement(
            args.bundle, sigstore=SigstoreIdentity(args.identity, args.issuer, args.staging),
            check="ci_provenance_signature")
        check_ci_statement(statement, subjects, repository=args.repository, commit=args.commit)
    except (OSError, ValueError) as exc:
        print(f"shipyard ci-verify: cannot read {args.subjects}: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        return _report_failure(f"shipyard ci-verify: FAILED {args.bundle}", exc)
    print(f"shipyard ci-verify: OK {subjects['model_name']} version {subjects['model_version']} "
          f"sha256:{subjects['model_digest']} signed by {args.identity}")
    return 0


def _report_failure(headline: str, exc: RegistryError) -> int:
    print(headline, file=sys.stderr)
    if exc.check:
        print(f"  check:    {exc.check}", file=sys.stderr)
    print(f"  reason:   {exc.message}", file=sys.stderr)
    if exc.expected is not None or exc.found is not None:
        print(f"  expected: {exc.expected}", file=sys.stderr)
        print(f"  found:    {exc.found}", file=sys.stderr)
    print(f"  code:     {exc.code}", file=sys.stderr)
    return 2 if exc.code in _USAGE_ERRORS else 1


def run_verify(args: argparse.Namespace) -> int:
    # MLflow draws download progress bars on stderr, where the verdict goes: keep it readable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        from registry.policy import load_policy
        from registry.verify import verify_model

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
        if getattr(args, "json", False):  # and the same on stderr, for the person
            _print_json({"model_uri": args.model_uri, "error": {
                "code": exc.code, "message": exc.message, "check": exc.check,
                "expected": exc.expected, "found": exc.found}})
        return _report_failure(f"shipyard verify: FAILED {args.model_uri}", exc)
    if getattr(args, "json", False):
        import dataclasses

        _print_json({**dataclasses.asdict(result), "policy": policy.source})
        return 0
    print(
        f"shipyard verify: OK {result.model_uri} -> {result.registered_model_name} "
        f"version {result.version}\n  model digest: sha256:{result.model_digest}\n"
        f"  signing mode: {result.signing_mode}\n  builder: {result.builder_id}\n"
        f"  source: {result.source_repository}\n  policy: {policy.source}"
    )
    if result.base_model is not None:
        base = result.base_model
        how = "imported as published" if result.imported else "fine-tuned from"
        print(f"  base model: {how} {base.source} sha256:{base.model_digest} "
              f"(licence {base.licence})")
    for check in result.checks:
        print(f"  [{check.status}] {check.name}: {check.detail}")
    if result.model_dir is not None:
        print(f"  verified files: {result.model_dir}")
    return 0


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=2, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
