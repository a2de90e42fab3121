"""Files written without an fsync of their own, made durable together before anything that
names them is written.

A pull installs two files a scene (the blob into the cache, a hard link into renders/), and
an fsync of each file and of each folder after its rename cost a pull-only apply a third of
its time: each forced a filesystem journal commit of its own. Instead nothing waits for
them until a lock write would name them: that write first flushes each filesystem they are
on once (`syncfs`, Linux; `os.sync` elsewhere) and then names them, so after a power cut the
lock still names only files that are on disk.

Only files that can be fetched again for free go this way: a verified download from the
team's remote, and a finished task's outputs, whose task stays in the journal until the
cache index names them (after the flush: the index commit is what drops the task). A finished
task's download starts its own writeback when it is complete (`start_writeback`), so that
the flush finds it mostly written. Pulls do not: the remote keeps a copy, the cache index may
name a pulled blob before the flush (after a power cut a blob cut short fails the cache's own
check, size and sha256, and is pulled again, never paid for), and a teammate's clone pulling
what its lock already names rewrites no lock, so nothing waits for its pulls at all. (Started
early, their writeback made every fsync on the filesystem meanwhile, the cache index's
commit among them, wait for all of it.) Fresh downloads are not fsync'd one by one either:
from fetch workers, those fsyncs contended with the journal entry's own on the disk
(benchmarks/apply_bench.py journal). A file whose loss would cost money, such as a task's
journal entry, keeps its own fsync before anything else happens.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast


def _syncfs_call() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # CDLL: the GIL is given back while the disk works
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int,)
    return cast(Callable[[int], int], call)


_syncfs = _syncfs_call()


def _writeback_call() -> Callable[[int, int, int, int], int] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return cast(Callable[[int, int, int, int], int], call)


_sync_file_range = _writeback_call()
SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages out; do not wait for them


def start_writeback(fd: int) -> None:
    """Have the kernel start writing `fd`'s data now, without waiting for it: the flush before
    the next lock write then finds it (mostly) on disk instead of writing it all at once."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # a hint: a failure is the flush's to report


class Unsynced:
    """The filesystems holding files written since the last `sync` (by device, a folder on it)."""

    def __init__(self) -> None:
        self._folders: dict[int, Path] = {}
        self._guard = threading.Lock()  # pulls note files from several threads at once

    def note(self, path: Path) -> None:
        """`path` was written or renamed into place without an fsync."""
        folder = path if path.is_dir() else path.parent
        try:
            device = folder.stat().st_dev
        except OSError:
            return
        with self._guard:
            self._folders.setdefault(device, folder)

    def sync(self) -> None:
        """Flush every filesystem noted since the last call. Raises OSError."""
        with self._guard:
            folders, self._folders = list(self._folders.values()), {}
        for folder in folders:
            if _syncfs is None or not folder.is_dir():  # removed since: its filesystem still holds it
                os.sync()
                return
            fd = os.open(folder, os.O_RDONLY)
            try:
                if _syncfs(fd) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, os.strerror(error), str(folder))
            finally:
                os.close(fd)

UNSYNCED = Unsynced()
