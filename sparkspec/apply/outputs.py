"""Materialising cached blobs into renders/ and checking what a provider delivered."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from sparkspec.errors import CacheDamaged
from sparkspec.fsutil import CHUNK, atomic_target
from sparkspec.state.digests import DigestMemo
from sparkspec.state.lockfile import FileRecord
from sparkspec.state.lockpaths import in_output_folder
from sparkspec.state.unsynced import UNSYNCED


def materialize(blob: Path, dest: Path, sha256: str, size: int, *, shared: bool = False) -> None:
    """Copy a cached blob into renders/ (a copy, not a link: users may edit renders/), checking
    the bytes as they are copied: a damaged blob is dropped and never reaches renders/.
    `shared`: the blob was just pulled from the team's remote and verified (Cache.fresh_pull),
    so it is hard-linked into place (a copy where the folders do not allow a link), unhashed."""
    if shared:
        _link_into_place(blob, dest)
        return
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


def _link_into_place(blob: Path, dest: Path) -> None:
    """`dest` becomes another name of `blob`, atomically: a link beside it, renamed over it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.link"
    try:
        os.link(blob, temp)
    except OSError:  # another filesystem, or one without hard links: a copy (fsync'd)
        with atomic_target(dest) as tmp:
            shutil.copyfile(blob, tmp)
        return
    try:
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    UNSYNCED.note(dest.parent)  # flushed before the lock names it, with the blob it shares


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

