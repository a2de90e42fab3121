"""Materialising cached blobs into renders/ and checking what a provider delivered."""

from __future__ import annotations

from pathlib import Path

from sparkspec.fsutil import atomic_copy


def materialize(blob: Path, dest: Path) -> None:
    """Copy a cached blob into renders/ (a copy, not a link: users may edit renders/)."""
    atomic_copy(blob, dest)


def remove_output(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False

