"""The content-addressed cache: renders by key, their files stored once by sha256.

The index (diskcache, SQLite underneath, safe across processes) maps a scene key
to what the render produced; the bytes live in blobs/<aa>/<sha256>, written
by rename so a reader never sees half a blob. Nothing is cached unless its
bytes are in place first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkspec.fsutil import atomic_move, sha256_file

CACHE_ENV = "SPARKSPEC_CACHE_DIR"


@dataclass(frozen=True)
class CachedRender:
    key: str
    provider: str
    model: str
    task_id: str
    seed: int
    tokens: int
    video_sha256: str
    video_bytes: int
    last_frame_sha256: str
    last_frame_bytes: int
    inputs: dict[str, Any]
    seed_derived: bool = False
    cost: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> CachedRender:
        return CachedRender(**raw)


def cache_dir(state_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    override = environ.get(CACHE_ENV)
    return Path(override) if override else state_dir / "cache"


class Cache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._index: Any = None

    @property
    def index(self) -> Any:
        if self._index is None:
            import diskcache

            self.directory.mkdir(parents=True, exist_ok=True)
            self._index = diskcache.Cache(str(self.directory / "index"))
        return self._index

    def exists(self) -> bool:
        return (self.directory / "index").is_dir()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def blob_path(self, sha256: str) -> Path:
        return self.directory / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def put_blob(self, source: Path, sha256: str) -> Path:
        """Move a verified file into the store. A blob of that name already there is kept
        only if its bytes are right; a damaged one is replaced."""
        dest = self.blob_path(sha256)
        if dest.exists() and blob_intact(dest, sha256, source.stat().st_size):
            source.unlink(missing_ok=True)
            return dest
        atomic_move(source, dest)
        return dest

    def lookup(self, key: str) -> CachedRender | None:
        """The render for `key`, only if both of its files are present."""
        if self._index is None and not self.exists():
            return None
        raw = self.index.get(key)
        if raw is None:
            return None
        render = CachedRender.from_json(raw)
        if not (self.has_blob(render.video_sha256, render.video_bytes)
                and self.has_blob(render.last_frame_sha256, render.last_frame_bytes)):
            return None
        return render

    def record(self, render: CachedRender) -> None:
        self.index.set(render.key, render.to_json())

    def record_many(self, renders: list[CachedRender]) -> None:
        """Several renders in one transaction: one index write for a batch, not one each."""
        with self.index.transact():
            for render in renders:
                self.index.set(render.key, render.to_json())

    def keys(self) -> Iterator[str]:
        if not self.exists():
            return iter(())
        return (str(k) for k in self.index.iterkeys())

    def drop(self, key: str) -> None:
        self.index.delete(key)

    def blobs(self) -> Iterator[tuple[str, Path]]:
        root = self.directory / "blobs"
        if not root.is_dir():
            return
        for shard in sorted(root.iterdir()):
            for blob in sorted(shard.iterdir()):
                if not blob.name.startswith(".") and not blob.name.endswith(".part"):  # temporaries
                    yield blob.name, blob


def blob_intact(path: Path, sha256: str, size: int) -> bool:
    """The file at `path` has `size` bytes hashing to `sha256`."""
    try:
        return path.stat().st_size == size and sha256_file(path) == sha256
    except OSError:
        return False
