"""Checkpoint storage on an fsspec object store (s3://, gs://, az://, ...).

A multi-node job keeps its checkpoints where every node (and a retry on other nodes) can
read them. Object stores have no rename and no fsync: a checkpoint is written in place under
its final prefix, and its ``manifest.json``, written last, is what publishes it (a prefix
without one is an incomplete write, never loaded). Removal deletes the manifest first, so a
removal cut short leaves an unpublished prefix, not a published torn checkpoint.

Credentials and endpoints come from the usual places of each fsspec backend (for S3: the
AWS_* environment, e.g. AWS_ENDPOINT_URL for an S3-compatible server, or an instance role).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from common.digests import sha256_stream

LOCAL_SCHEMES = ("", "file", "local")


def is_object_store_uri(location: str | None) -> bool:
    """True for `scheme://...` with a non-local scheme (s3, gs, az, ...)."""
    if not location or "://" not in location:
        return False
    return urlparse(location).scheme not in LOCAL_SCHEMES


class ObjectStore:
    """One URI prefix on an fsspec filesystem; keys are '/'-joined names below it."""

    def __init__(self, uri: str) -> None:
        import fsspec  # imported here: only object-store runs pay for it

        self.uri = uri.rstrip("/")
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    def url(self, *names: str) -> str:
        return "/".join([self.uri, *names])

    def _path(self, *names: str) -> str:
        return "/".join([self.root, *names])

    def refresh(self) -> None:
        """Forget cached listings: other ranks (other processes) write here too."""
        self.fs.invalidate_cache()

    def children(self) -> list[str]:
        """Names of the entries directly under the prefix."""
        self.refresh()
        if not self.fs.exists(self.root):
            return []
        return [entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(self.root)]

    def files(self, *names: str) -> dict[str, int]:
        """Relative name -> size of every object below `names`."""
        self.refresh()
        base = self._path(*names)
        found = self.fs.find(base, detail=True)
        return {key[len(base) + 1:]: int(info["size"]) for key, info in found.items()
                if info.get("type", "file") == "file" and key.startswith(base + "/")}

    def exists(self, *names: str) -> bool:
        self.refresh()
        return bool(self.fs.exists(self._path(*names)))

    def read_bytes(self, *names: str) -> bytes:
        data: bytes = self.fs.cat_file(self._path(*names))
        return data

    def write_bytes(self, data: bytes, *names: str) -> None:
        self.fs.pipe_file(self._path(*names), data)

    def sha256(self, *names: str) -> str:
        with self.fs.open(self._path(*names), "rb") as handle:
            return sha256_stream(handle)

    def remove_tree(self, *names: str, first: str | None = None) -> None:
        """Delete everything below `names`, the object `first` (the manifest) before the rest."""
        if first is not None and self.exists(*names, first):
            self.fs.rm_file(self._path(*names, first))
        if self.exists(*names):
            self.fs.rm(self._path(*names), recursive=True)
        self.refresh()
