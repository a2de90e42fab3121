"""Pulled and downloaded files are not fsync'd one by one: the lock writer flushes their
filesystem once before a lock write names them, and before the cache index names a task's
render (the index commit drops the task from the journal)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_runner import Cli
from sparkspec.state import unsynced
from sparkspec.state.unsynced import Unsynced
from teammates import two_machines


def record_flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every fsync (with the file's path) and syncfs from now on, in order, each still made."""
    events: list[str] = []
    real_fsync, real_syncfs = os.fsync, unsynced._syncfs
    assert real_syncfs is not None

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def syncfs(fd: int) -> int:
        events.append("syncfs")
        return real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(unsynced, "_syncfs", syncfs)
    return events


def test_each_filesystem_is_flushed_once_and_a_removed_folder_flushes_all(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    flushed: list[str] = []
    monkeypatch.setattr(unsynced, "_syncfs", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")) or 0)
    every: list[int] = []
    monkeypatch.setattr(unsynced.os, "sync", lambda: every.append(1))
    files = Unsynced()
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"x")
        files.note(tmp_path / name)
    files.sync()
    assert flushed == [str(tmp_path)] and every == []
    files.sync()
    assert flushed == [str(tmp_path)]  # nothing noted since
    gone = tmp_path / "gone"
    gone.mkdir()
    files.note(gone)
    gone.rmdir()
    files.sync()
    assert every == [1]


def test_a_clone_pulling_what_its_lock_names_waits_for_no_disk_and_writes_no_lock(
        tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = two_machines(tmp_path, cli)
    lock = second / "project.spark.lock"
    lock.write_text((first / "project.spark.lock").read_text())
    before = lock.stat()

    events = record_flushes(monkeypatch)
    result = cli("apply", "--auto-approve", cwd=second)
    assert result.code == 0, result.err
    assert (second / "renders" / "one.mp4").read_bytes() == (first / "renders" / "one.mp4").read_bytes()
    blobs = str(second / ".sparkspec" / "cache" / "blobs")
    renders = str(second / "renders")
    assert not [e for e in events if e.startswith((f"fsync {blobs}", f"fsync {renders}/one", f"fsync {renders}/two"))]
    assert events.count(f"fsync {renders}") == 2  # the review page's two files, not the four pulled
    # The lock already named every pulled file as it now is: not rewritten, so nothing flushed.
    assert "syncfs" not in events and not [e for e in events if "project.spark.lock" in e], events
    assert (lock.stat().st_ino, lock.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_pulls_a_lock_write_names_anew_are_flushed_before_it(tmp_path: Path, cli: Cli,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with the spec but not the lock: its lock comes to name the pulled files, and
    the filesystem is flushed before that write, once; no pulled file is fsync'd by itself."""
    _, second = two_machines(tmp_path, cli)
    events = record_flushes(monkeypatch)
    result = cli("apply", "--auto-approve", cwd=second)
    assert result.code == 0, result.err
    assert "pull" in result.out
    blobs = str(second / ".sparkspec" / "cache" / "blobs")
    assert not [e for e in events if e.startswith((f"fsync {blobs}", f"fsync {second}/renders/one"))]
    lock_writes = [i for i, e in enumerate(events) if e.startswith("fsync ") and "project.spark.lock" in e]
    assert lock_writes and "syncfs" in events[:lock_writes[-1]]


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_a_fresh_render_is_flushed_before_its_task_leaves_the_journal_and_fsyncs_no_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished task's outputs can be fetched again while the task is journalled: they are
    flushed with the lock writer's next write, before the cache index names them and the
    journal forgets the task, and never fsync'd one by one."""
    from fakeapi import FakeSparkAPI
    from sparkspec.state.journal import Journal
    from test_apply_money import apply

    events = record_flushes(monkeypatch)
    real_forget = Journal.forget_many

    def forget_many(journal: Journal, keys: list[str]) -> None:
        events.append(f"forget {len(keys)}")
        real_forget(journal, keys)

    monkeypatch.setattr(Journal, "forget_many", forget_many)
    with FakeSparkAPI(api_key="sk-flush", render="template") as api:
        result, _ = apply(tmp_path, api)
    assert result.ok and len(result.completed) == 2
    state = str(tmp_path / ".sparkspec")
    assert not [e for e in events if e.startswith((f"fsync {state}/tmp", f"fsync {state}/cache/blobs"))], events
    forgets = [i for i, e in enumerate(events) if e.startswith("forget") and e != "forget 0"]
    assert forgets and all("syncfs" in events[:i] for i in forgets)
