"""Real file-system conditions for fault tests: a small tmpfs (a disk that fills up) and a
read-only bind mount (EROFS even for root, who ignores file modes). Skips where mounting is
not permitted."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")


@contextmanager
def mounted(*args: str, at: Path) -> Iterator[Path]:
    at.mkdir(parents=True, exist_ok=True)
    mount(*args, str(at))
    try:
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=True)


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` made read-only by a read-only bind mount over itself: root too gets EROFS."""
    with mounted("--bind", str(folder), at=folder):
        mount("-o", "remount,bind,ro", str(folder))
        yield folder
