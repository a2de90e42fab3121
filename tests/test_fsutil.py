"""The one atomic-write helper: a failed write leaves no temporary file and names the target."""

from __future__ import annotations

import errno
from pathlib import Path

import av
import pytest

from sparkspec.fsutil import atomic_target


def test_a_failed_write_names_the_target_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    with pytest.raises(OSError) as caught:
        with atomic_target(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_an_error_whose_filename_is_read_only_still_names_the_target(tmp_path: Path) -> None:
    """PyAV's OSError subclasses make `filename` a read-only property (seen when the state folder
    was deleted under a render): the error becomes a plain one of the same errno, not a crash."""
    target = tmp_path / "clip.mp4"
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_target(target):
            raise av.error.FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOENT
    assert list(tmp_path.iterdir()) == []
