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

    way = heldio._Released if calls == "os" else heldio._Held
    monkeypatch.setattr(way, "write", staticmethod(full))
    monkeypatch.setattr(way, "write_aligned", staticmethod(full))
    with pytest.raises(OSError, match="No space left") as failed:
        Journal(tmp_path).record(KEY, "intro", "spark", "cgt-1", 3600)
    assert failed.value.filename == str(tmp_path / f"{KEY}.json")
    assert list(tmp_path.iterdir()) == [] and Journal(tmp_path).get(KEY) is None


def _write_bytes() -> int:
    with open("/proc/self/io") as counters:
        return int(dict(line.split(": ") for line in counters.read().splitlines())["write_bytes"])


@pytest.mark.skipif(not hasattr(os, "O_DIRECT") or not os.path.exists("/proc/self/io"), reason="Linux's O_DIRECT")
def test_a_new_entry_reaches_the_disk_as_a_sector_not_a_page(tmp_path: Path, calls: str) -> None:
    """A buffered 250-byte entry costs a whole 4 KB page of written bytes; padded to a 512-byte
    sector and written with O_DIRECT it costs the sector (and reads back the same)."""
    journal = Journal(tmp_path)
    before = _write_bytes()
    entries = [journal.record(f"{i:064x}", "intro", "spark", f"cgt-{i}", 3600) for i in range(40)]
    written = _write_bytes() - before
    if written == 0:
        pytest.skip("this folder's file system writes nothing to a disk (tmpfs)")
    if not heldio._direct:
        pytest.skip("this folder's file system refuses O_DIRECT")
    assert written / len(entries) < 3072, written / len(entries)  # buffered: 4096 and more an entry
    path = tmp_path / f"{0:064x}.json"
    assert path.stat().st_size % heldio.SECTOR == 0 and path.read_bytes().rstrip(b" ").endswith(b"}")
    assert [journal.get(e.key) for e in entries] == entries


def test_a_file_system_that_refuses_o_direct_gets_the_entry_written_buffered(
        tmp_path: Path, calls: str, monkeypatch: pytest.MonkeyPatch) -> None:
    way = heldio._Released if calls == "os" else heldio._Held
    opened: list[bool] = []
    real_open = way.open

    def picky(path: Path, flags: int, mode: int) -> int:  # as tmpfs before Linux 6.6, or some FUSE
        opened.append(bool(flags & heldio._DIRECT))
        if flags & heldio._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(way, "open", staticmethod(picky))
    monkeypatch.setattr(heldio, "_direct", bool(heldio._DIRECT))
    journal = Journal(tmp_path)
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    second = journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    assert journal.get(KEY) == first and journal.get("cd" * 32) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{KEY}.json", f"{'cd' * 32}.json"])
    directs = [flag for flag in opened if flag]
    assert len(directs) == (1 if heldio._DIRECT else 0)  # asked once, then never again


def test_a_journal_folder_deleted_under_it_is_noticed_and_its_running_tasks_written_again(tmp_path: Path) -> None:
    """`rm -rf .sparkspec` during an apply took the entries of the tasks still rendering with
    it: after a Ctrl-C or a kill the next apply paid for them again."""
    journal = Journal(tmp_path / ".sparkspec" / "journal")
    assert not journal.vanished()  # nothing journalled yet: nothing to lose
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600, now=1_800_000_000.0)
    journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600, now=1_800_000_000.0)
    journal.forget("cd" * 32)  # collected
    assert not journal.vanished()
    import shutil

    shutil.rmtree(tmp_path / ".sparkspec")
    assert journal.vanished()
    assert journal.rewrite() == [first]
    assert not journal.vanished()
    assert Journal(tmp_path / ".sparkspec" / "journal").entries() == [first]
