"""The journal's entries on disk: written straight to their name, fsync'd, read back; an entry
torn by a kill is reported, an existing one is replaced whole."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from sparkspec.state import heldio
from sparkspec.state.journal import DamagedEntry, Journal

KEY = "ab" * 32


@pytest.fixture(params=["libc", "os"])
def calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """An entry is written through libc with the GIL held (Linux), or through `os` elsewhere."""
    if request.param == "os":
        monkeypatch.setattr(heldio, "_libc", None)
    elif heldio._libc is None:
        pytest.skip("no libc to call with the GIL held here")
    return str(request.param)


def test_a_new_entry_is_its_own_file_with_the_umasks_mode_and_reads_back(tmp_path: Path, calls: str) -> None:
    journal = Journal(tmp_path / "journal")  # made on first use
    old = os.umask(0o027)
    try:
        entry = journal.record(KEY, "intro", "spark", "cgt-1", 3600, now=1_800_000_000.0, locator="{}")
    finally:
        os.umask(old)
    assert [p.name for p in (tmp_path / "journal").iterdir()] == [f"{KEY}.json"]  # no temporary left
    assert stat.S_IMODE((tmp_path / "journal" / f"{KEY}.json").stat().st_mode) == 0o640
    assert journal.get(KEY) == entry and journal.entries() == [entry]


def test_an_existing_entry_is_replaced_whole(tmp_path: Path, calls: str) -> None:
    journal = Journal(tmp_path)
    journal.record(KEY, "intro", "spark", "cgt-old", 3600)
    journal.record(KEY, "intro", "spark", "cgt-new", 3600)
    entry = journal.get(KEY)
    assert entry is not None and entry.task_id == "cgt-new"
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.json"]


@pytest.mark.parametrize("torn", [b"", b'{"key": "' + KEY.encode() + b'", "task_id": "cgt'])
def test_an_entry_torn_by_a_kill_is_reported_never_taken_for_no_entry(tmp_path: Path, torn: bytes) -> None:
    (tmp_path / f"{KEY}.json").write_bytes(torn)
    with pytest.raises(DamagedEntry, match="damaged journal entry"):
        Journal(tmp_path).get(KEY)


def test_a_write_that_fails_leaves_no_entry_and_names_the_file(tmp_path: Path, calls: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes, path: Path) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(heldio._Released if calls == "os" else heldio._Held, "write", staticmethod(full))
    with pytest.raises(OSError, match="No space left") as failed:
        Journal(tmp_path).record(KEY, "intro", "spark", "cgt-1", 3600)
    assert failed.value.filename == str(tmp_path / f"{KEY}.json")
    assert list(tmp_path.iterdir()) == [] and Journal(tmp_path).get(KEY) is None
