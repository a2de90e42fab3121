"""The content-addressed cache: renders by key, their files stored once by sha256.

The index (diskcache, SQLite underneath, safe across processes) maps a scene key
to what the render produced; the bytes live in blobs/<aa>/<sha256>, written
by rename so a reader never sees half a blob. Nothing is cached unless its
bytes are in place first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
import dataclasses
import errno
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkspec.errors import CacheDamaged, DiskError
from sparkspec.fsutil import atomic_move, sha256_file
from sparkspec.state.unsynced import UNSYNCED

if TYPE_CHECKING:
    from sparkspec.state.digests import DigestMemo

CACHE_ENV = "SPARKSPEC_CACHE_DIR"


@dataclass(frozen=True)
class CachedRender:
    key: str
    provider: str
    model: str
    task_id: str
    seed: int
    tokens: int
    video_sha256: str
    video_bytes: int
    last_frame_sha256: str
    last_frame_bytes: int
    inputs: dict[str, Any]
    seed_derived: bool = False
    cost: float | None = None
    last_frame_extracted: bool = False  # decoded from the video: the task gave no last frame
    # The last frame is a stand-in decoded from the video again (the render's own was lost
    # everywhere): the sha256 of the render's own, which scenes chained after it are keyed by.
    rendered_frame_sha256: str | None = None

    @property
    def frame_identity(self) -> str:
        """What a scene chained after this render is keyed by: the render's own last frame."""
        return self.rendered_frame_sha256 or self.last_frame_sha256

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_index(self) -> dict[str, Any]:
        """As the cache's index keeps it: fields at their defaults left out (read back as
        those defaults, by this sparkspec and earlier ones), 36 bytes of each of its rows."""
        return {k: v for k, v in self.__dict__.items() if k not in _DEFAULTS or v != _DEFAULTS[k]}

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> CachedRender:
        """An entry as stored; fields a newer sparkspec added are ignored."""
        return CachedRender(**{name: raw[name] for name in _FIELDS if name in raw})


_FIELDS = tuple(f.name for f in dataclasses.fields(CachedRender))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(CachedRender) if f.default is not dataclasses.MISSING}


def cache_dir(state_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The cache's folder. A file standing there is an error for every command: a plan that read
    no cache would say renders must be paid for again."""
    override = environ.get(CACHE_ENV)
    folder = Path(override) if override else state_dir / "cache"
    if not override and state_dir.exists() and not state_dir.is_dir():  # gc said "the cache is empty"
        raise DiskError(f"{state_dir}: a file stands where sparkspec keeps its state; move it away and run "
                        "the command again")
    if folder.exists() and not folder.is_dir():
        fix = f"point {CACHE_ENV} at a folder" if override else "move it away"
        raise DiskError(f"{folder}: a file stands where sparkspec keeps the cache{f' ({CACHE_ENV})' if override else ''}; "
                        f"{fix} and run the command again")
    return folder


class Cache:
    """The cache of one project's workspace. `memo` vouches for blobs unchanged since they were
    last hashed; without one, every blob a lookup returns is hashed."""

    def __init__(self, directory: Path, memo: DigestMemo | None = None) -> None:
        self.directory = directory
        self.memo = memo
        self._index: Any = None
        self._opening = threading.Lock()  # the apply's threads open the index once, together
        self._pulled: dict[str, tuple[int, int, int]] = {}  # sha -> (size, mtime_ns, inode) when verified

    @property
    def index(self) -> Any:
        if self._index is None:
            with self._opening:
                return self._open_index()
        return self._index

    def _open_index(self) -> Any:
        """The index, opened by the first thread to ask. Two threads each opening one (a fresh
        cache: the loop looking up a key while the lock writer records the first batch) left a
        transaction on one object and its writes on the other, which then waited for it."""
        if self._index is None:
            from sparkspec.state.cacheindex import Index

            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                # Never evict: an index entry is a paid render; only `sparkspec gc` drops one.
                # No eviction index either: a fifth fewer bytes written per entry. A rollback
                # journal, not SQLite's write-ahead log: new pages are written once, not to the
                # log and then again into the database, a third fewer bytes an entry. Its commits
                # wait for two fsyncs, so an apply indexes in batches: its renders and its pulls
                # at the lock writer's writes (benchmarks/RESULTS.md, session 9). `record_many`
                # makes its commit durable itself (`_sync_commit`).
                self._index = Index(str(self.directory / "index"), eviction_policy="none",
                                    sqlite_journal_mode=_journal_mode(self.directory / "index"))
            except Exception as exc:  # noqa: BLE001 - sqlite3.Error or OSError, decided below
                # A read-only checkout, or a full disk (diskcache writes its settings on every
                # open): read without writing, as plan needs; a write later says what is wrong.
                if not (self.exists() and (_read_only(self.directory / "index") or _disk_full(exc))):
                    with self._index_errors():
                        raise
                self._index = _ReadOnlyIndex(self.directory / "index",
                                             errno.EROFS if _read_only(self.directory / "index") else errno.ENOSPC)
        return self._index

    @contextmanager
    def _index_errors(self) -> Iterator[None]:
        """The index's failures as what to do about them: a damaged file (SQLite's own check, or
        a record that no longer decodes), or the world (a full disk, a read-only folder)."""
        import pickle
        import sqlite3

        from diskcache import Timeout

        from sparkspec.state.cacheindex import ForeignEntry

        index = self.directory / "index"
        try:
            yield
        except ForeignEntry:
            raise  # one entry, not the index: its reader decides
        except Timeout:
            raise DiskError(f"{index}: the cache index stayed locked by another process for over a "
                            "minute; run the command again when it has finished") from None
        except (sqlite3.OperationalError, OSError) as exc:
            if _size_limited(exc):
                raise DiskError(f"{index}: the cache index failed ({exc}); the file size limit (`ulimit -f`) "
                                "may be too small for it: raise it and run the command again") from None
            raise DiskError(f"{index}: the cache index failed ({exc}); free some disk "
                            "space or fix the folder's permissions, and run the command again") from None
        except (sqlite3.Error, pickle.UnpicklingError, ValueError, LookupError, EOFError) as exc:
            # Not set aside quietly: its entries are the way back to renders paid for before.
            raise CacheDamaged(f"{index}: the cache index is damaged ({type(exc).__name__}: {exc}); move "
                               f"it aside (mv {index} {index}.damaged) and run the command again: "
                               "renders/ and the lock are intact, and the cached files stay") from None

    def exists(self) -> bool:
        return (self.directory / "index").is_dir()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def blob_path(self, sha256: str) -> Path:
        return self.directory / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def put_blob(self, source: Path, sha256: str, *, pulled: bool = False, refetchable: bool = False) -> Path:
        """Move a verified file into the store. A blob of that name already there is kept
        only if its bytes are right; a damaged one is replaced. `pulled`: downloaded from the
        team's remote (which keeps a copy) and verified by this process; see `fresh_pull`.
        `refetchable`: a finished task's output whose task stays in the journal until the
        cache index names it. Neither is fsync'd here: see state.unsynced for when they are."""
        dest = self.blob_path(sha256)
        if dest.exists() and blob_intact(dest, sha256, source.stat().st_size):
            source.unlink(missing_ok=True)
            return dest
        atomic_move(source, dest, synced=not (pulled or refetchable))
        if pulled or refetchable:  # it can be fetched again for free until that write
            UNSYNCED.note(dest)
        if pulled:
            st = dest.stat()
            self._pulled[sha256] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return dest

    def fresh_pull(self, sha256: str, size: int) -> bool:
        """Whether the blob was pulled and verified by this process and is unchanged since
        (same size, mtime and inode): renders/ may share its inode instead of a second copy.
        An edit in place of such a file damages the cached copy too, which the cache's own
        check then drops: that costs a download from the remote, never a render."""
        stamp = self._pulled.get(sha256)
        if stamp is None or stamp[0] != size:
            return False
        try:
            st = self.blob_path(sha256).stat()
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns, st.st_ino) == stamp

    def entry(self, key: str) -> CachedRender | None:
        """The index entry for `key`, whether or not its files are intact."""
        if self._index is None and not self.exists():
            return None
        from sparkspec.state.cacheindex import ForeignEntry

        try:
            with self._index_errors():
                raw = self.index.get(key)
        except ForeignEntry:  # not a plain entry (a newer sparkspec's class, or planted): as good as absent
            return None
        try:
            return CachedRender.from_json(raw) if isinstance(raw, Mapping) else None
        except (TypeError, ValueError):  # an entry from no sparkspec: as good as absent
            return None

    def lookup(self, key: str) -> CachedRender | None:
        """The render for `key`, only if both of its files are present and intact."""
        return self.probe(key)[0]

    def probe(self, key: str) -> tuple[CachedRender | None, str | None]:
        """(the render, None) when it is cached intact; (None, why) when its entry exists but a
        file is damaged (that file is dropped); (None, None) when it is not cached."""
        render = self.entry(key)
        if render is None:
            return None, None
        for sha, size in ((render.video_sha256, render.video_bytes),
                          (render.last_frame_sha256, render.last_frame_bytes)):
            state = self.verify_blob(sha, size)
            if state == "missing":
                return None, None
            if state == "damaged":
                return None, "cached copy damaged"
        return render, None

    def verify_blob(self, sha256: str, size: int) -> str:
        """"ok", "missing", or "damaged" (then the blob is dropped, so it is fetched again)."""
        path = self.blob_path(sha256)
        try:
            if path.stat().st_size == size:
                digest = self.memo.sha256(path) if self.memo is not None else sha256_file(path)
                if digest == sha256:
                    return "ok"
        except FileNotFoundError:
            return "missing"
        except OSError:
            pass  # unreadable: as good as damaged
        try:
            path.unlink()
        except OSError:
            pass  # a read-only cache: it stays damaged, and stays unused
        return "damaged"

    def record(self, render: CachedRender) -> None:
        with self._index_errors():
            self.index.set(render.key, render.to_index())

    def record_many(self, renders: list[CachedRender]) -> None:
        """Several renders in one transaction: one index write for a batch, not one each. On
        disk when it returns: the caller may then drop the journal entries of their tasks."""
        with self._index_errors():
            index = self.index
            with index.transact():
                for render in renders:
                    index.set(render.key, render.to_index())
            _sync_commit(self.directory / "index")

    def keys(self) -> Iterator[str]:
        if not self.exists():
            return iter(())
        with self._index_errors():
            return iter([str(k) for k in self.index.iterkeys()])

    def drop(self, key: str) -> None:
        with self._index_errors():
            self.index.delete(key)

    def blobs(self) -> Iterator[tuple[str, Path]]:
        root = self.directory / "blobs"
        if not root.is_dir():
            return
        for shard in sorted(root.iterdir()):
            for blob in sorted(shard.iterdir()):
                if not blob.name.startswith(".") and not blob.name.endswith(".part"):  # temporaries
                    yield blob.name, blob


def _sync_commit(folder: Path) -> None:
    """Make the index's last commit durable. At diskcache's synchronous NORMAL, SQLite commits by
    truncating its rollback journal without an fsync (pager.c, Mozilla bug 1072773): after a
    power cut the journal could come back and roll the commit back, while apply had already
    dropped those tasks from its own journal. One fsync of the journal file settles it; FULL
    would also sync the journal's header, two more fsyncs a commit, which showed in the latency
    of a create's journal entry (benchmarks/apply_bench.py journal)."""
    try:
        fd = os.open(folder / "cache.db-journal", os.O_RDONLY)
    except FileNotFoundError:  # on the write-ahead log (an index of an earlier sparkspec, in use)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _journal_mode(folder: Path) -> str:
    """The rollback journal, unless the index is on SQLite's write-ahead log (sparkspec before
    session 9 made it so) and another process has it open now: leaving the log needs the
    database to itself, and diskcache would retry that for a minute and fail. It then stays on
    the log for this run, which works the same, and moves at the next open that finds it free."""
    import sqlite3

    try:
        with (folder / "cache.db").open("rb") as db:
            header = db.read(20)
    except OSError:
        return "truncate"
    if len(header) < 20 or header[18] != 2:  # the file format's write version: 2 is the log
        return "truncate"
    try:
        con = sqlite3.connect(folder / "cache.db", timeout=0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=truncate").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return "wal"
    except sqlite3.Error:
        pass  # damaged: opening it says so
    return "truncate"


def blob_intact(path: Path, sha256: str, size: int) -> bool:
    """The file at `path` has `size` bytes hashing to `sha256`."""
    try:
        return path.stat().st_size == size and sha256_file(path) == sha256
    except OSError:
        return False


def _size_limited(exc: BaseException) -> bool:
    """A write past the process's file size limit: EFBIG, which SQLite reports as a "disk I/O
    error", under a limit that is not infinite."""
    import resource

    if isinstance(exc, OSError):
        return exc.errno == errno.EFBIG
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return "disk I/O error" in str(exc) and limit != resource.RLIM_INFINITY


def _disk_full(exc: BaseException) -> bool:
    """SQLite's or the file system's word for a full disk (or quota)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc) or "disk I/O error" in str(exc)


def _read_only(folder: Path) -> bool:
    """A folder sparkspec may not write: a read-only checkout, where plan still reads the cache."""
    return not os.access(folder, os.W_OK) or os.statvfs(folder).f_flag & os.ST_RDONLY != 0


class _ReadOnlyIndex:
    """diskcache's index read without writing to it (diskcache itself writes on open): SQLite
    opened read-only and immutable, values decoded by diskcache's own Disk. `refusal`: the errno
    a write meets (a read-only file system, or a full disk). Opened by whichever of the apply's
    threads asked first, and used by the others."""

    def __init__(self, folder: Path, refusal: int = errno.EROFS) -> None:
        import sqlite3

        from sparkspec.state.cacheindex import PlainDisk

        self._disk = PlainDisk(str(folder))
        self._refusal = refusal
        self._db = sqlite3.connect(f"{(folder / 'cache.db').as_uri()}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False)

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                               (key,)).fetchone()
        return None if row is None else self._disk.fetch(row[0], row[1], row[2], False)

    def iterkeys(self) -> Iterator[Any]:
        return (row[0] for row in self._db.execute("SELECT key FROM Cache WHERE raw = 1 ORDER BY rowid"))

    def set(self, key: str, value: Any) -> None:
        raise OSError(self._refusal, os.strerror(self._refusal), str(self._disk._directory))

    @contextmanager
    def transact(self) -> Iterator[None]:
        yield

    def delete(self, key: str) -> None:
        self.set(key, None)

    def close(self) -> None:
        self._db.close()
