"""Materialising cached blobs into renders/ and checking what a provider delivered."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sparkspec.errors import DownloadError
from sparkspec.fsutil import fsync_dir


def materialize(blob: Path, dest: Path) -> None:
    """Copy a cached blob to `dest` atomically (a copy: users may edit renders/)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(blob, tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def check_png(path: Path) -> tuple[int, int]:
    """A delivered last frame must be a decodable PNG; returns its size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.format != "PNG":
                raise DownloadError(f"the last frame is {image.format}, not PNG", code="bad_content")
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DownloadError(f"the last frame is not a readable image ({exc})", code="bad_content") from None


def remove_output(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
