"""Where a split lives (data/io.py reads it): a local path, relative paths resolving against
the project root, or a URI opened through fsspec with a scheme from `ALLOWED_URI_SCHEMES`; the
cheap checks before any read, and the file's sha256."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import fsspec

from common.digests import sha256_file, sha256_stream
from common.errors import StageError
from common.settings import PROJECT_ROOT

SUPPORTED_SUFFIXES = (".jsonl", ".parquet")
# Object stores and local files only: no http(s) (an unauthenticated, mutable source), no
# fsspec chaining or caching schemes that can reach elsewhere.
ALLOWED_URI_SCHEMES = ("file", "s3", "gs", "gcs", "az", "abfs", "abfss", "memory")


def is_uri(location: str) -> bool:
    return "://" in location


def check_uri_scheme(split: str, location: str) -> None:
    scheme = location.split("://", 1)[0].lower() if is_uri(location) else "file"
    if scheme not in ALLOWED_URI_SCHEMES or "::" in location:
        raise StageError(
            "DATA_URI_SCHEME_NOT_ALLOWED",
            f"data.{split}_path={location!r}: scheme {scheme!r} (or a chained fsspec URL) is "
            f"not allowed. Use a local path or one of {list(ALLOWED_URI_SCHEMES)}; copy data "
            "from elsewhere into an object store first.",
        )


def resolve_location(location: str) -> str:
    """Absolute local path, or the URI unchanged."""
    if is_uri(location):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def check_split_location(split: str, location: str) -> str:
    """Cheap checks before any expensive work: known extension, file exists. Returns it resolved."""
    check_uri_scheme(split, location)
    resolved = resolve_location(location)
    suffix = PurePosixPath(resolved).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise StageError(
            "DATA_UNSUPPORTED_FORMAT",
            f"data.{split}_path={location!r}: unknown file extension {suffix or '(none)'!r}. "
            f"Supported: {list(SUPPORTED_SUFFIXES)}; convert the file or rename it.",
        )
    if not _exists(split, location, resolved):
        raise StageError(
            "DATA_FILE_NOT_FOUND",
            f"data.{split}_path={location!r}: no file at {resolved}. Point data.{split}_path "
            "at an existing file (relative paths resolve against the project root) or run "
            "`python -m data.generate` to recreate the shipped corpus.",
        )
    return resolved


def _exists(split: str, location: str, resolved: str) -> bool:
    if not is_uri(resolved):
        return Path(resolved).is_file()
    try:
        fs, path = fsspec.core.url_to_fs(resolved)
        return bool(fs.isfile(path))
    except Exception as exc:  # credentials, unknown protocol, network: all "cannot reach"
        raise StageError(
            "DATA_FILE_UNREACHABLE",
            f"data.{split}_path={location!r}: cannot open {resolved} through fsspec "
            f"({type(exc).__name__}: {exc}). Check the URI, the protocol's fsspec package and "
            "the object-store credentials.",
        ) from exc


def sha256_location(location: str) -> str:
    """sha256 of the file's bytes; object-store files are streamed, never fully loaded."""
    resolved = resolve_location(location)
    if not is_uri(resolved):
        return sha256_file(Path(resolved))
    with fsspec.open(resolved, "rb") as handle:
        return sha256_stream(handle)
