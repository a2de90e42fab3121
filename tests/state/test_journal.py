"""The journal's entries on disk: records of one log, each appended as whole sectors and
fsync'd, read back by any process; a damaged record is reported, never taken for no entry; the
apply that appended compacts the log as it ends. An older sparkspec's entry files are read."""

from __future__ import annotations

import errno
import json
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


def test_a_new_entry_is_a_sector_of_the_log_with_the_umasks_mode_and_reads_back(tmp_path: Path, calls: str) -> None:
    journal = Journal(tmp_path / "journal")  # made on first use
    old = os.umask(0o027)
    try:
        entry = journal.record(KEY, "intro", "spark", "cgt-1", 3600, now=1_800_000_000.0, locator="{}")
    finally:
        os.umask(old)
    log = tmp_path / "journal" / "tasks.log"
    assert [p.name for p in (tmp_path / "journal").iterdir()] == ["tasks.log"]  # no temporary left
    assert stat.S_IMODE(log.stat().st_mode) == 0o640 and log.stat().st_size == heldio.SECTOR
    assert journal.get(KEY) == entry and journal.entries() == [entry]
    assert Journal(tmp_path / "journal").get(KEY) == entry  # as another process reads it


def test_an_existing_entry_is_replaced_and_what_is_done_goes_when_the_apply_ends(tmp_path: Path, calls: str) -> None:
    journal = Journal(tmp_path)
    journal.record(KEY, "intro", "spark", "cgt-old", 3600)
    new = journal.record(KEY, "intro", "spark", "cgt-new", 3600)
    done = journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    journal.forget(done.key)
    assert Journal(tmp_path).get(KEY) == new and Journal(tmp_path).get(done.key) is None
    assert Journal(tmp_path).keys() == {KEY}
    journal.close_log()  # compacted: the entry alive, alone
    assert (tmp_path / "tasks.log").stat().st_size == heldio.SECTOR
    assert Journal(tmp_path).entries() == [new]
    again = Journal(tmp_path)
    again.forget(KEY)
    again.close_log()
    assert list(tmp_path.iterdir()) == [] and Journal(tmp_path).entries() == []


def test_an_entry_too_long_for_a_sector_is_a_file_of_its_own(tmp_path: Path, calls: str) -> None:
    journal = Journal(tmp_path)
    short = journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    journal.record(KEY, "intro", "spark", "cgt-0", 3600)
    long = journal.record(KEY, "intro", "spark", "cgt-1", 3600, locator="q" * 1500)  # replaces cgt-0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{KEY}.json", "tasks.log"])
    assert Journal(tmp_path).get(KEY) == long and Journal(tmp_path).entries() == [long, short]
    journal.forget(KEY)
    assert Journal(tmp_path).entries() == [short] and not (tmp_path / f"{KEY}.json").exists()


def _sector(line: bytes) -> bytes:
    return line.ljust(heldio.SECTOR - 1) + b"\n"


def test_a_damaged_sector_damages_nothing_else(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    with (tmp_path / "tasks.log").open("ab") as log:
        log.write(b"P " + b"e" * 64 + b" {\"key\": \"" + b"\0" * 300)  # torn, and only part of a sector
    second = Journal(tmp_path).record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    reader = Journal(tmp_path)
    assert reader.get(KEY) == first and reader.get("cd" * 32) == second
    with pytest.raises(DamagedEntry, match=f"damaged journal entry of key {'e' * 12}"):
        reader.get("e" * 64)


def test_a_record_whose_key_and_entry_disagree_is_damaged(tmp_path: Path) -> None:
    entry = {"key": "cd" * 32, "scene": "a", "provider": "spark", "task_id": "cgt-1", "submitted_at": 1.0,
             "expires_after": 3600, "locator": None}
    (tmp_path / "tasks.log").write_bytes(_sector(f"P {KEY} {json.dumps(entry)}".encode()))
    with pytest.raises(DamagedEntry, match="names key cdcdcdcdcdcd"):
        Journal(tmp_path).get(KEY)
    assert Journal(tmp_path).get("cd" * 32) is None


def test_a_number_out_of_range_is_a_damaged_entry_not_a_traceback(tmp_path: Path) -> None:
    text = f'P {KEY} {{"key": "{KEY}", "scene": "a", "provider": "spark", "task_id": "t", "submitted_at": 1.0, ' \
           '"expires_after": 1e999, "locator": null}'
    (tmp_path / "tasks.log").write_bytes(_sector(text.encode()))
    with pytest.raises(DamagedEntry):
        Journal(tmp_path).get(KEY)


def test_a_forget_names_each_task_by_position_and_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    (tmp_path / "tasks.log").open("ab").write(_sector(b"F 0:cdcdcdcd"))  # position 0 is not a cd... key
    assert Journal(tmp_path).get(KEY) == first


def test_a_log_replaced_or_deleted_under_its_writer_gets_the_writers_entries_again(tmp_path: Path) -> None:
    """A put returns once its entry is on disk, whatever happened to the log meanwhile: another
    journal's compaction, `rm -rf .sparkspec`, the log alone deleted."""
    import shutil

    folder = tmp_path / ".sparkspec" / "journal"
    writer, other = Journal(folder), Journal(folder)
    keys = [f"{i:064x}" for i in range(6)]
    writer.record(keys[0], "a", "spark", "cgt-0", 3600)
    other.record(keys[1], "b", "spark", "cgt-1", 3600)
    other.forget(keys[1])
    other.record(keys[2], "c", "spark", "cgt-2", 3600)
    other.close_log()  # compacted: a new file
    writer.record(keys[3], "d", "spark", "cgt-3", 3600)
    assert Journal(folder).keys() == {keys[0], keys[2], keys[3]}
    shutil.rmtree(tmp_path / ".sparkspec")
    writer.record(keys[4], "e", "spark", "cgt-4", 3600)
    assert Journal(folder).keys() == {keys[0], keys[3], keys[4]}  # the writer's own, all on disk
    (folder / "tasks.log").unlink()
    writer.record(keys[5], "f", "spark", "cgt-5", 3600)
    assert Journal(folder).keys() == {keys[0], keys[3], keys[4], keys[5]}


def test_the_check_before_paying_appends_to_the_log_itself(tmp_path: Path) -> None:
    (tmp_path / "tasks.log").mkdir()  # a log that cannot be appended to
    with pytest.raises(OSError):
        Journal(tmp_path).check_writable()
    (tmp_path / "tasks.log").rmdir()
    journal = Journal(tmp_path)
    journal.check_writable()  # a blank sector: no record
    assert (tmp_path / "tasks.log").stat().st_size == heldio.SECTOR and journal.keys() == set()
    entry = journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    assert Journal(tmp_path).entries() == [entry]


@pytest.mark.parametrize("torn", [b"", b'{"key": "' + KEY.encode() + b'", "task_id": "cgt'])
def test_an_older_sparkspecs_entry_torn_by_a_kill_is_reported_never_taken_for_no_entry(tmp_path: Path,
                                                                                       torn: bytes) -> None:
    (tmp_path / f"{KEY}.json").write_bytes(torn)
    with pytest.raises(DamagedEntry, match="damaged journal entry"):
        Journal(tmp_path).get(KEY)


def test_an_older_sparkspecs_entry_is_read_and_goes_when_its_task_is_done(tmp_path: Path) -> None:
    legacy = {"key": KEY, "scene": "intro", "provider": "spark", "task_id": "cgt-1", "submitted_at": 1.0,
              "expires_after": 3600, "locator": None}
    (tmp_path / f"{KEY}.json").write_text(json.dumps(legacy))
    journal = Journal(tmp_path)
    entry = journal.get(KEY)
    assert entry is not None and entry.task_id == "cgt-1" and journal.keys() == {KEY}
    journal.forget(KEY)
    assert journal.get(KEY) is None and list(tmp_path.iterdir()) == []


def test_a_damaged_record_is_reported_under_its_key_or_for_every_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    other = journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    log = tmp_path / "tasks.log"
    data = bytearray(log.read_bytes())
    data[80:90] = b"##########"  # inside the first record's JSON: its key still reads
    log.write_bytes(bytes(data))
    with pytest.raises(DamagedEntry, match=f"tasks.log: damaged journal entry of key {KEY[:12]}"):
        Journal(tmp_path).get(KEY)
    assert Journal(tmp_path).get(other.key) == other
    data[5:10] = b"#####"  # now its key does not: any key's task may be the one it held
    log.write_bytes(bytes(data))
    with pytest.raises(DamagedEntry, match="names no readable key"):
        Journal(tmp_path).get("ef" * 32)  # no entry of its own: a submission might pay twice
    # A readable entry is still collected: its task is paid for whatever the damaged line held.
    assert Journal(tmp_path).get(other.key) == other
    with pytest.raises(DamagedEntry, match="names no readable key"):
        Journal(tmp_path).get(KEY)  # the damaged line was its own
    journal.close_log()  # a damaged log is not compacted away
    assert log.read_bytes() == bytes(data)


def test_sectors_never_written_are_not_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    with (tmp_path / "tasks.log").open("ab") as log:
        log.write(b"\0" * heldio.SECTOR)  # a crash as the file grew
    assert Journal(tmp_path).entries() == [first]


def test_a_write_that_fails_leaves_the_log_as_it_was_and_names_the_file(tmp_path: Path, calls: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path)
    first = journal.record(KEY, "intro", "spark", "cgt-1", 3600)

    def full(fd: int, data: bytes, path: Path) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    way = heldio._Released if calls == "os" else heldio._Held
    monkeypatch.setattr(way, "write", staticmethod(full))
    monkeypatch.setattr(way, "write_aligned", staticmethod(full))
    with pytest.raises(OSError, match="No space left") as failed:
        journal.record("cd" * 32, "outro", "spark", "cgt-2", 3600)
    assert failed.value.filename == str(tmp_path / "tasks.log")
    assert (tmp_path / "tasks.log").stat().st_size == heldio.SECTOR
    assert Journal(tmp_path).entries() == [first]


def _write_bytes() -> int:
    with open("/proc/self/io") as counters:
        return int(dict(line.split(": ") for line in counters.read().splitlines())["write_bytes"])


@pytest.mark.skipif(not hasattr(os, "O_DIRECT") or not os.path.exists("/proc/self/io"), reason="Linux's O_DIRECT")
def test_a_new_entry_reaches_the_disk_as_a_sector_not_a_page(tmp_path: Path, calls: str) -> None:
    """A buffered 250-byte entry costs a whole 4 KB page of written bytes; padded to a 512-byte
    sector and written with O_DIRECT it costs the sector (and reads back the same)."""
    journal = Journal(tmp_path)
    journal.record(KEY, "intro", "spark", "cgt-0", 3600)  # the log made
    before = _write_bytes()
    entries = [journal.record(f"{i:064x}", "intro", "spark", f"cgt-{i}", 3600) for i in range(40)]
    written = _write_bytes() - before
    if written == 0:
        pytest.skip("this folder's file system writes nothing to a disk (tmpfs)")
    if not heldio._direct:
        pytest.skip("this folder's file system refuses O_DIRECT")
    assert written / len(entries) < 3072, written / len(entries)  # buffered: 4096 and more an entry
    assert (tmp_path / "tasks.log").stat().st_size == 41 * heldio.SECTOR
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
    assert Journal(tmp_path).get(KEY) == first and Journal(tmp_path).get("cd" * 32) == second
    assert [p.name for p in tmp_path.iterdir()] == ["tasks.log"]
    assert (tmp_path / "tasks.log").stat().st_size == 2 * heldio.SECTOR
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


def test_entries_put_and_forgotten_from_two_threads_at_once_stay_apart(tmp_path: Path) -> None:
    """The event loop's thread puts while the lock writer's forgets: a record's position and the
    state it updates go together, or a forget drops another task's entry."""
    import threading

    journal = Journal(tmp_path)
    keys = [f"{i:064x}" for i in range(300)]
    put: list[str] = []
    finished = threading.Event()

    def forgetter() -> None:
        done = 0
        while not finished.is_set() or done < len(put):
            ready = put[done:]
            done += len(ready)
            journal.forget_many([k for k in ready if int(k, 16) % 2 == 0])

    thread = threading.Thread(target=forgetter)
    thread.start()
    for key in keys:
        journal.record(key, "s", "spark", f"cgt-{key[-4:]}", 3600)
        put.append(key)
    finished.set()
    thread.join()
    odd = {k for k in keys if int(k, 16) % 2}
    assert Journal(tmp_path).keys() == odd
    journal.close_log()
    assert {e.key for e in Journal(tmp_path).entries()} == odd
    assert (tmp_path / "tasks.log").stat().st_size == len(odd) * heldio.SECTOR


def test_two_journals_of_one_folder_in_turn_keep_each_others_records(tmp_path: Path) -> None:
    """Ctrl-C: the apply's journal, then another cancelling queued tasks, in one process."""
    first, second = Journal(tmp_path), Journal(tmp_path)
    keys = [f"{i:064x}" for i in range(4)]
    first.record(keys[0], "a", "spark", "cgt-0", 3600)
    second.forget(keys[0])
    second.record(keys[1], "b", "spark", "cgt-1", 3600)
    first.record(keys[2], "c", "spark", "cgt-2", 3600)
    first.forget(keys[1])
    second.record(keys[3], "d", "spark", "cgt-3", 3600)
    assert Journal(tmp_path).keys() == {keys[2], keys[3]}
    assert first.keys() == second.keys() == {keys[2], keys[3]}
    first.record(keys[1], "b", "spark", "cgt-4", 3600)
    first.forget(keys[1])  # at the position it was written at, not where `first` last wrote
    assert Journal(tmp_path).keys() == {keys[2], keys[3]}


def test_a_log_that_cannot_be_read_is_said_so(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record(KEY, "intro", "spark", "cgt-1", 3600)
    log = tmp_path / "tasks.log"
    log.unlink()
    log.mkdir()  # not a file any more: reading it fails as an unreadable one would
    with pytest.raises(DamagedEntry, match="cannot read the journal of submitted tasks"):
        Journal(tmp_path).get("cd" * 32)
