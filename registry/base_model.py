"""The base model a fine-tune started from (or an imported model is), as the registry records it.

The train stage describes its base with `training.pretrained.BaseModelIdentity`; the registry
may not import training, so it takes that identity as its JSON (`to_json()`) or a dict, with the
same fields, and checks it here. In the SLSA provenance the base becomes three
ResourceDescriptors (https://github.com/in-toto/attestation/blob/main/spec/v1/resource_descriptor.md):

  base_model        the converted model directory, by its model-signing root digest; annotated
                    with the configured source, name, licence, upstream and converter
  base_model/gguf   the GGUF it was converted from: `pkg:pypi/PACKAGE@VERSION#MEMBER` for a
                    packaged model, by sha256; annotated with its file name, licence, converter
  base_model/wheel  the wheel that shipped the GGUF: `pkg:pypi/PACKAGE@VERSION`, by the wheel
                    sha256 that requirements/assets.txt pins

`base_from_statement` reads the base back out of a verified provenance, for the verifier's
result (deploy and reports show it) and the policy's `allowed_base_models`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from common.digests import is_sha256
from registry import provenance as prov
from registry.errors import RegistryError

BASE_MODEL = "base_model"
BASE_GGUF = "base_model/gguf"
BASE_WHEEL = "base_model/wheel"
_REQUIRED = ("name", "source", "model_digest", "licence")
_PURL = re.compile(r"^pkg:pypi/(?P<package>[^@#?]+)@(?P<version>[^#?]+)")


@dataclass(frozen=True)
class BaseModelRef:
    """`training.pretrained.BaseModelIdentity`, field for field (a test keeps them equal)."""

    name: str
    source: str  # e.g. "package:smollm2-135m-instruct"
    model_digest: str  # model-signing root digest of the converted directory (hex)
    licence: str
    package: str | None = None
    package_version: str | None = None
    wheel_sha256: str | None = None
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    converter: str | None = None
    upstream: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_base_identity(value: str | Mapping[str, Any]) -> BaseModelRef:
    """A base identity (JSON text or a dict) checked field by field: BASE_IDENTITY_INVALID
    naming the field otherwise."""
    raw: Any = value
    if isinstance(value, str):
        try:
            raw = json.loads(value)
        except ValueError as exc:
            raise _invalid(f"it is not JSON ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise _invalid(f"expected an object, found {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(BaseModelRef)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _invalid(f"unknown field(s) {unknown}; known: {sorted(known)}")
    missing = [k for k in _REQUIRED if not isinstance(raw.get(k), str) or not raw[k].strip()]
    if missing:
        raise _invalid(f"field(s) {missing} must be non-empty strings")
    for key in known - set(_REQUIRED):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise _invalid(f"field {key!r} must be a string or null")
    for key in ("model_digest", "wheel_sha256", "gguf_sha256"):
        if raw.get(key) is not None and not is_sha256(raw[key]):
            raise _invalid(f"field {key!r}={raw[key]!r} must be 64 lowercase hex (a sha256)")
    if (raw.get("package") is None) != (raw.get("package_version") is None):
        raise _invalid("set both package and package_version, or neither")
    return BaseModelRef(**raw)


def base_dependencies(base: BaseModelRef, model_dir: Path | None) -> list[prov.ResourceDescriptor]:
    """The base's ResourceDescriptors: directory, GGUF (when converted from one), wheel (when
    packaged). `model_dir`, where the converted directory is, only gives the first its URI."""
    annotations = _present({"source": base.source, "name": base.name, "licence": base.licence,
                            "upstream": base.upstream, "converter": base.converter})
    deps = [prov.ResourceDescriptor(
        name=BASE_MODEL,
        uri=Path(model_dir).resolve().as_uri() if model_dir is not None else None,
        digest={"sha256": base.model_digest},
        annotations=annotations,
    )]
    deps += upstream_dependencies(base)
    return deps


def upstream_dependencies(base: BaseModelRef) -> list[prov.ResourceDescriptor]:
    """What the converted directory was made from: the GGUF and the wheel that shipped it."""
    deps = []
    if base.gguf_sha256 is not None:
        deps.append(prov.ResourceDescriptor(
            name=BASE_GGUF,
            uri=_gguf_purl(base),
            digest={"sha256": base.gguf_sha256},
            annotations=_present({"file": base.gguf_file, "licence": base.licence,
                                  "converter": base.converter}),
        ))
    if base.package is not None and base.wheel_sha256 is not None:
        deps.append(prov.ResourceDescriptor(
            name=BASE_WHEEL,
            uri=f"pkg:pypi/{base.package}@{base.package_version}",
            digest={"sha256": base.wheel_sha256},
            annotations={"licence": base.licence},
        ))
    return deps


def base_from_statement(statement: dict[str, Any]) -> BaseModelRef | None:
    """The base model a verified provenance records: for an imported model the model itself
    (its identity is an internal parameter, its digest the subject); for a fine-tune its
    `base_model` dependency and the GGUF and wheel beside it; None without a base."""
    if prov.is_imported(statement):
        internal = statement["predicate"]["buildDefinition"].get("internalParameters", {})
        identity = dict(internal.get("base_model") or {})
        identity["model_digest"] = prov.subject_digest(statement)
        identity.setdefault("source", prov.import_source(statement) or "unknown")
        identity.setdefault("name", "unknown")
        identity.setdefault("licence", "unknown")
        return parse_base_identity(identity)
    deps = {str(d.get("name")): d for d in prov.resolved_dependencies(statement)}
    base = deps.get(BASE_MODEL)
    digest = (base or {}).get("digest", {}).get("sha256")
    if base is None or not digest:
        return None
    notes = base.get("annotations") or {}
    gguf, wheel = deps.get(BASE_GGUF) or {}, deps.get(BASE_WHEEL) or {}
    purl = _PURL.match(str(wheel.get("uri", "")))
    return BaseModelRef(
        name=str(notes.get("name", "unknown")),
        source=str(notes.get("source", base.get("uri") or "unknown")),
        model_digest=str(digest),
        licence=str(notes.get("licence", "unknown")),
        package=purl["package"] if purl else None,
        package_version=purl["version"] if purl else None,
        wheel_sha256=(wheel.get("digest") or {}).get("sha256"),
        gguf_file=(gguf.get("annotations") or {}).get("file"),
        gguf_sha256=(gguf.get("digest") or {}).get("sha256"),
        converter=notes.get("converter"),
        upstream=notes.get("upstream"),
    )


def base_tags(base: BaseModelRef) -> dict[str, str]:
    """MLflow tags naming the base, for people and searches (trust comes from the provenance)."""
    return _present({
        "shipyard.base.digest": base.model_digest,
        "shipyard.base.source": base.source,
        "shipyard.base.name": base.name,
        "shipyard.base.licence": base.licence,
        "shipyard.base.package": (f"{base.package}=={base.package_version}"
                                  if base.package else None),
        "shipyard.base.gguf_sha256": base.gguf_sha256,
    })


def _gguf_purl(base: BaseModelRef) -> str | None:
    # purl subpath: the GGUF's path inside the package, from the installed distribution's file
    # list (the identity records only the file name); the file name when it is not installed.
    if base.package is None or base.gguf_file is None:
        return None
    member = base.gguf_file
    try:
        dist = importlib.metadata.distribution(base.package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None and dist.version == base.package_version:
        member = next((str(PurePosixPath(str(f))) for f in dist.files or []
                       if PurePosixPath(str(f)).name == base.gguf_file), member)
    return f"pkg:pypi/{base.package}@{base.package_version}#{member}"


def _present(values: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _invalid(why: str) -> RegistryError:
    return RegistryError(
        "BASE_IDENTITY_INVALID",
        f"base model identity: {why}. Pass training.pretrained.BaseModelIdentity.to_json() "
        "of the base the model was trained from (TrainedModel's base identity), unchanged.",
    )
