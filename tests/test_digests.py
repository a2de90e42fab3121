"""The digest memo: an unchanged file is hashed once, across processes' worth of instances;
any change of size, ctime or inode makes it read the file again, an mtime put back too."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from sparkspec.state import digests
from sparkspec.state.digests import DigestMemo


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = digests.sha256_file

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(digests, "sha256_file", counting)
    return seen


def memo(root: Path) -> DigestMemo:
    return DigestMemo(root / ".sparkspec", root)


def test_an_unchanged_file_is_read_once_even_by_a_new_memo(tmp_path: Path, reads: list[Path]) -> None:
    image = tmp_path / "assets/logo.png"
    image.parent.mkdir()
    image.write_bytes(b"pixels")
    first = memo(tmp_path)
    assert first.sha256(image) == hashlib.sha256(b"pixels").hexdigest()
    assert first.sha256(image) == hashlib.sha256(b"pixels").hexdigest()
    first.save()
    assert memo(tmp_path).sha256(image) == hashlib.sha256(b"pixels").hexdigest()
    assert memo(tmp_path).sha256_under(tmp_path, "assets/logo.png") == hashlib.sha256(b"pixels").hexdigest()
    assert reads == [image]
    assert "assets/logo.png" in (tmp_path / ".sparkspec/digests.json").read_text()


def test_a_changed_size_mtime_or_inode_is_read_again(tmp_path: Path, reads: list[Path]) -> None:
    image = tmp_path / "logo.png"
    image.write_bytes(b"one")
    m = memo(tmp_path)
    m.sha256(image)
    image.write_bytes(b"three")  # size
    assert m.sha256(image) == hashlib.sha256(b"three").hexdigest()
    stat = image.stat()
    image.write_bytes(b"THREE")  # same size: only mtime tells
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert m.sha256(image) == hashlib.sha256(b"THREE").hexdigest()
    replacement = tmp_path / "new.png"
    replacement.write_bytes(b"three")
    os.utime(replacement, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns))
    os.replace(replacement, image)  # same size and mtime, another inode
    assert m.sha256(image) == hashlib.sha256(b"three").hexdigest()
    assert len(reads) == 4


def test_an_edit_whose_mtime_was_put_back_is_read_again(tmp_path: Path, reads: list[Path]) -> None:
    """`touch -r` (or a tool that keeps timestamps) after an edit of the same size: the mtime
    says nothing changed; the inode's ctime, which only the kernel sets, does."""
    video = tmp_path / "intro.mp4"
    video.write_bytes(b"sparkspec's bytes")
    m = memo(tmp_path)
    assert m.sha256(video) == hashlib.sha256(b"sparkspec's bytes").hexdigest()
    before = video.stat()
    time.sleep(0.01)  # a ctime tick apart
    video.write_bytes(b"the user's bytes!")
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert video.stat().st_mtime_ns == before.st_mtime_ns and video.stat().st_size == before.st_size
    assert m.sha256(video) == hashlib.sha256(b"the user's bytes!").hexdigest()
    assert reads == [video, video]


def test_a_missing_file_has_no_digest(tmp_path: Path) -> None:
    assert memo(tmp_path).sha256(tmp_path / "nope.png") is None
    assert not (tmp_path / ".sparkspec").exists()


@pytest.mark.parametrize("damaged", [b"", b"\x00\xff garbage", b"[1, 2]", b'{"a.png": [1]}',
                                     b'{"a.png": [1, 2, 3, "not a digest"]}', b'{"a.png": "x"}'])
def test_a_damaged_memo_is_rebuilt(tmp_path: Path, damaged: bytes) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    (tmp_path / "digests.json").write_bytes(damaged)
    memo = DigestMemo(tmp_path, tmp_path)
    assert memo.sha256(image) == hashlib.sha256(b"pixels").hexdigest()
    memo.save()
    saved = json.loads((tmp_path / "digests.json").read_text())
    assert list(saved) == ["a.png"] and saved["a.png"][3] == hashlib.sha256(b"pixels").hexdigest()


def test_a_memo_entry_cut_short_after_a_matching_stamp_is_hashed_again(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    st = image.stat()
    (tmp_path / "digests.json").write_text(json.dumps({"a.png": [st.st_size, st.st_mtime_ns, st.st_ino]}))
    assert DigestMemo(tmp_path, tmp_path).sha256(image) == hashlib.sha256(b"pixels").hexdigest()
