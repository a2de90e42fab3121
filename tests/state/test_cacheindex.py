"""The cache index is opened in one transaction: diskcache's own opening commits each of its
settings on its own, and each commit appends a page to SQLite's write-ahead log (about 220 KB
written for every apply, a no-op one included)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import diskcache
import pytest

from sparkspec.state.cacheindex import Index

FRAME = 4096 + 24  # a page in the write-ahead log, with its frame header


def wal_frames_of_an_open(folder: Path, kind: type[diskcache.Cache]) -> int:
    """Pages an opening of the existing index at `folder` appends to the log. Another connection
    stays open meanwhile, so the log is not checkpointed away when the opener closes its own."""
    watcher = sqlite3.connect(folder / "cache.db")
    watcher.execute("SELECT count(*) FROM Cache").fetchall()
    try:
        wal = folder / "cache.db-wal"
        before = wal.stat().st_size if wal.exists() else 0
        kind(str(folder), eviction_policy="none").close()
        return (wal.stat().st_size - max(before, 32)) // FRAME
    finally:
        watcher.close()


def test_reopening_an_index_writes_a_page_or_two_where_diskcache_writes_dozens(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    index = Index(str(folder), eviction_policy="none")
    index.set("key", {"video_sha256": "a" * 64})
    index.close()
    plain = wal_frames_of_an_open(folder, diskcache.Cache)
    ours = wal_frames_of_an_open(folder, Index)
    assert plain > 20  # what diskcache alone does: the measure sees it
    assert ours <= 4
    reopened = Index(str(folder), eviction_policy="none")
    assert reopened.get("key") == {"video_sha256": "a" * 64}
    assert reopened.eviction_policy == "none"
    reopened.close()


def test_a_fresh_index_is_created_with_diskcache_settings_and_the_log(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    index = Index(str(folder), eviction_policy="none", cull_limit=3)
    index.set("a", 1)
    with index.transact():
        index.set("b", 2)
    index.close()
    db = sqlite3.connect(folder / "cache.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    settings = dict(db.execute("SELECT key, value FROM Settings").fetchall())
    assert settings["eviction_policy"] == "none" and settings["cull_limit"] == 3 and settings["count"] == 2
    db.close()
    # Settings changed at a later opening are stored too, in the one transaction.
    Index(str(folder), eviction_policy="none", cull_limit=5).close()
    again = diskcache.Cache(str(folder))
    assert again.cull_limit == 5 and again.get("b") == 2
    again.close()


def test_an_opening_waits_for_another_process_writing_and_then_succeeds(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    Index(str(folder), eviction_policy="none").close()
    other = sqlite3.connect(folder / "cache.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO Settings VALUES ('other', 1)")
    released = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    index = Index(str(folder), eviction_policy="none")
    assert time.monotonic() - started >= 0.25  # it waited for the other writer, and did not fail
    index.set("k", "v")
    assert index.get("k") == "v"
    index.close()
    released.join()
    other.close()


def test_an_index_on_the_log_moves_to_the_rollback_journal_when_no_other_process_has_it_open(
        tmp_path: Path) -> None:
    # Made by sparkspec before session 9 (SQLite's write-ahead log), and still open elsewhere:
    # leaving the log needs the database to itself, which diskcache would retry for a minute.
    from sparkspec.state.cache import Cache, CachedRender

    older = diskcache.Cache(str(tmp_path / "cache" / "index"), eviction_policy="none")
    older.set("old", {"key": "old"})
    started = time.monotonic()
    cache = Cache(tmp_path / "cache")
    assert cache.index.get("old") == {"key": "old"}
    assert time.monotonic() - started < 5
    assert cache.index._sql("PRAGMA journal_mode").fetchone() == ("wal",)  # for this run
    cache.record(CachedRender(key="new", provider="spark", model="m", task_id="t", seed=1, tokens=1,
                              video_sha256="a" * 64, video_bytes=1, last_frame_sha256="b" * 64,
                              last_frame_bytes=1, inputs={}))
    cache.close()
    older.close()
    cache = Cache(tmp_path / "cache")  # alone now: it moves
    assert cache.index._sql("PRAGMA journal_mode").fetchone() == ("truncate",)
    assert cache.entry("new") is not None and cache.index.get("old") == {"key": "old"}
    cache.close()


def test_a_batch_is_on_disk_when_it_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `record_many` the rollback journal's truncation, SQLite's commit point, is fsync'd:
    at synchronous NORMAL SQLite leaves it to the OS, and after a power cut the journal could
    come back and roll the commit back (pager.c, Mozilla bug 1072773), while apply has already
    dropped those tasks from its own journal."""
    import os

    from sparkspec.state.cache import Cache, CachedRender

    synced: list[str] = []
    fsync = os.fsync

    def watched(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    cache = Cache(tmp_path / "cache")
    cache.record(CachedRender(key="first", provider="spark", model="m", task_id="t", seed=1, tokens=1,
                              video_sha256="a" * 64, video_bytes=1, last_frame_sha256="b" * 64,
                              last_frame_bytes=1, inputs={}))
    monkeypatch.setattr(os, "fsync", watched)
    cache.record_many([CachedRender(key=f"k{i}", provider="spark", model="m", task_id=f"t{i}", seed=1, tokens=1,
                                    video_sha256="a" * 64, video_bytes=1, last_frame_sha256="b" * 64,
                                    last_frame_bytes=1, inputs={}) for i in range(3)])
    assert str(tmp_path / "cache/index/cache.db-journal") in synced
    assert os.path.getsize(tmp_path / "cache/index/cache.db-journal") == 0  # committed: truncated
    cache.close()
