"""The cache index is opened once, whichever of the apply's threads asks first: the loop looking
up a key and the lock writer recording the first batch of a fresh cache at the same moment
once opened two, and the batch's writes then waited a minute for its own transaction on the
other one (diskcache.Timeout: an internal error)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sparkspec.state.cacheindex as cacheindex
from sparkspec.state.cache import Cache, CachedRender


def render(key: str) -> CachedRender:
    return CachedRender(key=key, provider="spark", model="m", task_id="t", seed=1, tokens=1,
                        video_sha256="a" * 64, video_bytes=1, last_frame_sha256="b" * 64,
                        last_frame_bytes=1, inputs={})


class SlowToOpen(cacheindex.Index):
    """Opening takes a while, as on a loaded machine, and the second opening longer than the
    first: the first is in use, in a transaction, when the second one is handed out."""

    opened = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the folder is there from here on
        SlowToOpen.opened += 1
        time.sleep(0.1 if SlowToOpen.opened == 1 else 0.4)


def test_a_batch_recorded_while_another_thread_looks_up_a_fresh_cache(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cacheindex, "Index", SlowToOpen)
    monkeypatch.setattr(SlowToOpen, "opened", 0)
    cache = Cache(tmp_path / "cache")
    done = threading.Event()
    failed: list[BaseException] = []

    def record() -> None:
        try:
            cache.record_many([render(f"k{n}") for n in range(8000)])  # a batch that takes a while
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failed.append(exc)
        done.set()

    writer = threading.Thread(target=record, daemon=True)
    writer.start()
    while not cache.exists():  # the writer is opening the index: the loop looks a key up now
        time.sleep(0.005)
    assert cache.lookup("elsewhere") is None
    assert done.wait(10), "the batch waited on a transaction of its own"
    assert not failed
    assert all(cache.index.get(k) is not None for k in ("k1", "k7999"))
    cache.close()


def test_threads_asking_at_once_get_one_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cacheindex, "Index", SlowToOpen)
    monkeypatch.setattr(SlowToOpen, "opened", 0)
    cache = Cache(tmp_path / "cache")
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(cache.index)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(index) for index in seen}) == 1
    cache.close()


@pytest.mark.parametrize("limit, says", [(2000, "ulimit -f"), (None, "free some disk space")])
def test_sqlites_disk_io_error_under_a_file_size_limit_says_to_raise_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int | None, says: str) -> None:
    """SQLite reports a write past RLIMIT_FSIZE (EFBIG) as "disk I/O error": the advice was to
    free disk space or fix permissions."""
    import resource
    import sqlite3

    from sparkspec.errors import DiskError

    wanted = resource.RLIM_INFINITY if limit is None else limit
    monkeypatch.setattr(resource, "getrlimit", lambda which: (wanted, wanted))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(DiskError) as failed:
        with cache._index_errors():
            raise sqlite3.OperationalError("disk I/O error")
    assert "the cache index failed (disk I/O error)" in str(failed.value) and says in str(failed.value)


class _Planted:
    """A value that runs a command when unpickled, as a planted index entry would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("read_only", [False, True])
def test_an_index_value_naming_a_class_is_absent_and_never_run(tmp_path: Path, read_only: bool) -> None:
    """A cache folder another user or a newer sparkspec wrote: a value that names a class or a
    function (an unknown one was an internal error; os.system ran) reads as no entry."""
    import sqlite3

    cache = Cache(tmp_path / "cache")
    cache.record(render("a" * 64))
    cache.close()
    marker = tmp_path / "ran"
    import diskcache

    raw = diskcache.Cache(str(tmp_path / "cache" / "index"))  # the stock Disk pickles anything
    raw.set("b" * 64, _Planted(marker))
    raw.set("c" * 64, {"key": "c" * 64, "future": __import__("fractions").Fraction(1, 3)})
    raw.close()
    if read_only:
        db = tmp_path / "cache" / "index" / "cache.db"
        assert sqlite3.connect(db).execute("SELECT count(*) FROM Cache").fetchone()[0] == 3
        (tmp_path / "cache" / "index").chmod(0o555)
    try:
        again = Cache(tmp_path / "cache")
        if read_only:
            again._index = __import__("sparkspec.state.cache", fromlist=["_ReadOnlyIndex"])._ReadOnlyIndex(
                tmp_path / "cache" / "index")
        assert again.entry("b" * 64) is None and again.entry("c" * 64) is None
        assert again.entry("a" * 64) == render("a" * 64)
        again.close()
    finally:
        (tmp_path / "cache" / "index").chmod(0o755)
    assert not marker.exists()


def test_a_render_whose_blob_went_before_the_index_commit_keeps_its_task_journalled(tmp_path: Path) -> None:
    """The cache folder deleted while the apply ran: indexing the render dropped its task from
    the journal, the index named files that were gone, and the next apply paid for it again."""
    import hashlib
    import random
    import time

    from sparkspec.apply.tasks import TaskRunner
    from sparkspec.config.model import PollConfig
    from sparkspec.state.journal import Journal

    cache, journal = Cache(tmp_path / "cache"), Journal(tmp_path / "journal")
    renders = []
    for name in ("kept", "gone"):
        blobs = {}
        for part in ("video", "frame"):
            data = f"{name} {part}".encode()
            sha = hashlib.sha256(data).hexdigest()
            (tmp_path / "part").write_bytes(data)
            cache.put_blob(tmp_path / "part", sha)
            blobs[part] = (sha, len(data))
        key = hashlib.sha256(name.encode()).hexdigest()
        renders.append(CachedRender(key=key, provider="spark", model="m", task_id=f"t-{name}", seed=1, tokens=1,
                                    video_sha256=blobs["video"][0], video_bytes=blobs["video"][1],
                                    last_frame_sha256=blobs["frame"][0], last_frame_bytes=blobs["frame"][1],
                                    inputs={}))
        journal.record(key, name, "spark", f"t-{name}", 3600)

    async def no_sleep(seconds: float) -> None:
        pass

    runner = TaskRunner(None, journal, cache, lambda event: None, no_sleep, random.Random(0), time.time,
                        time.monotonic, PollConfig(1.0, 2.0), tmp_path / "tmp", 1)
    runner.uncommitted = list(renders)
    cache.blob_path(renders[1].video_sha256).unlink()
    commit, _ = runner.take_commit()
    commit()
    assert cache.entry(renders[0].key) == renders[0] and journal.get(renders[0].key) is None
    assert cache.entry(renders[1].key) is None
    gone = journal.get(renders[1].key)
    assert gone is not None and gone.task_id == "t-gone"
