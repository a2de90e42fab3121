"""Materialising cached blobs into renders/ and checking what a provider delivered."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from sparkspec.config.model import Project
from sparkspec.errors import CacheDamaged
from sparkspec.fsutil import CHUNK, atomic_target
from sparkspec.state.digests import DigestMemo
from sparkspec.state.lockfile import FileRecord, SceneRecord, SequenceRecord
from sparkspec.state.lockpaths import in_output_folder


def materialize(blob: Path, dest: Path, sha256: str, size: int) -> None:
    """Copy a cached blob into renders/ (a copy, not a link: users may edit renders/), checking
    the bytes as they are copied: a damaged blob is dropped and never reaches renders/."""
    with atomic_target(dest) as tmp:
        with blob.open("rb") as reader, tmp.open("wb") as writer:
            digest = hashlib.sha256()
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            copied = writer.tell()
        if digest.hexdigest() != sha256 or copied != size:
            blob.unlink(missing_ok=True)
            raise CacheDamaged(f"{blob}: the cached copy of {dest.name} is damaged and was dropped; "
                               "run `sparkspec apply` again to render it afresh")


def remove_output(root: Path, output_dir: str, record: FileRecord, memo: DigestMemo) -> str | None:
    """Delete an output the lock records, only if it is in the output folder and its bytes are
    the ones recorded; otherwise leave it. Returns why it was left (None: deleted or gone)."""
    if not in_output_folder(record.path, output_dir):
        return f"left {record.path}: outside the output folder {output_dir}/"
    path = root / record.path
    try:
        digest = memo.sha256(path)
    except OSError as exc:
        return f"left {record.path}: cannot read it ({exc.strerror or exc})"
    if digest is None:
        return None
    if digest != record.sha256:
        return f"left {record.path}: changed since sparkspec wrote it"
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return None

