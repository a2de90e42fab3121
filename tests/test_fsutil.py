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


def test_a_copy_onto_a_full_disk_names_the_file_written_not_the_source(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # shutil's fast copy puts the source in `filename`: the message then blamed a disk with room.
    import shutil

    from sparkspec import fsutil

    source, dest = tmp_path / "download.part", tmp_path / "cache" / "blob"
    source.write_bytes(b"video")

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError) as raised:
        fsutil.atomic_copy(source, dest)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(dest)
    assert not list(dest.parent.iterdir())  # the temporary file went


def test_a_write_over_a_folder_names_the_target_not_the_temporary_file(tmp_path: Path) -> None:
    from sparkspec.fsutil import atomic_write_bytes

    (tmp_path / "index.html").mkdir()
    with pytest.raises(OSError) as raised:
        atomic_write_bytes(tmp_path / "index.html", b"<!doctype html>")
    assert raised.value.filename == str(tmp_path / "index.html")
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_not_a_directory_names_the_file_in_the_way(tmp_path: Path) -> None:
    """`cache/blobs` a file: the error named `cache/blobs/a1`, a path that does not exist."""
    from sparkspec.errors import DiskError

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "blobs").write_text("x")
    with pytest.raises(NotADirectoryError) as raised:
        (tmp_path / "cache" / "blobs" / "a1").mkdir(parents=True, exist_ok=True)
    message = str(DiskError.from_os(raised.value))
    assert message.startswith(f"{tmp_path / 'cache' / 'blobs'}: Not a directory; a file stands where"), message
