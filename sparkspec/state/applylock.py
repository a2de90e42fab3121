"""One apply (or gc) at a time per project: an OS file lock, and a note of who holds it.

The lock is a filelock on .sparkspec/apply.lock: the OS releases it when its holder
dies, even by SIGKILL, so a crashed apply never blocks the next one. Beside it,
apply.holder.json says which process holds it, for the message a second apply prints.
Where the system allows (Linux, macOS: flock on a folder), the project folder itself is
locked too, first: deleting .sparkspec/ during an apply removes the lock file and the
journal with it, and a second apply that took a fresh lock would pay for the renders the
first is still collecting.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkspec.errors import ApplyLockedError
from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json

LOCK_NAME = "apply.lock"
HOLDER_NAME = "apply.holder.json"


@contextmanager
def apply_lock(state_dir: Path, command: str = "apply", cache: Path | None = None) -> Iterator[None]:
    """The project's lock; with `cache`, the cache is marked in use too (see `cache_in_use`)."""
    with _project_lock(state_dir, command):
        if cache is None:
            yield
        else:
            with cache_in_use(cache, exclusive=command == "gc"):
                yield


CACHE_LOCK = "inuse.lock"


@contextmanager
def cache_in_use(cache: Path, exclusive: bool = False) -> Iterator[None]:
    """A cache may be shared by several projects (SPARKSPEC_CACHE_DIR): an apply, pull or push
    holds a shared flock on it while it runs, and gc an exclusive one, refused at once while
    any of them runs: gc keeps only what locks name, and a running apply's renders are in the
    cache before its lock names them (gc in another project dropped them, and they were paid
    for again). Where flock is not available, nothing is held."""
    try:
        import fcntl

        cache.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache / CACHE_LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except (ImportError, OSError):  # no flock here, or a cache that cannot be written (the command says so)
        yield
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise ApplyLockedError(f"{cache}: an apply, pull or push is using this cache (this project's, or "
                                       "another's that shares it through SPARKSPEC_CACHE_DIR); run gc once it is "
                                       "done") from None
            fcntl.flock(fd, fcntl.LOCK_SH)  # a gc is sweeping: wait for it (it does not take long)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its flock


@contextmanager
def _project_lock(state_dir: Path, command: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    folder = _hold_folder(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(state_dir / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise _busy(state_dir / LOCK_NAME, state_dir) from None
        holder = state_dir / HOLDER_NAME
        try:
            atomic_write_text(holder, json.dumps({
                "command": command, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z")}, sort_keys=True))
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()
    finally:
        if folder is not None:
            os.close(folder)  # closing the descriptor releases its flock


def _hold_folder(state_dir: Path) -> int | None:
    """An exclusive flock on the project folder (state_dir's parent): its descriptor, or None
    where the system cannot lock a folder (then the lock file alone serves)."""
    try:
        import fcntl

        fd = os.open(state_dir.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(state_dir.parent, state_dir) from None
    except OSError:
        os.close(fd)
        return None
    return fd


def running(state_dir: Path) -> str | None:
    """Who holds the project's lock now (an apply or gc in another process), or None: asked
    without taking it and without writing anything (plan runs in a read-only checkout)."""
    try:
        import fcntl

        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(state_dir)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing it drops the shared flock this took, if it took one
    return None


def _busy(held: Path, state_dir: Path) -> ApplyLockedError:
    return ApplyLockedError(f"{held}: another sparkspec {_holder(state_dir)} is running on this project; "
                            "wait for it to finish")


def _holder(state_dir: Path) -> str:
    try:
        raw = load_json((state_dir / HOLDER_NAME).read_text(encoding="utf-8"))
        return (f"{raw['command']} (pid {raw['pid']} on {raw['host']}, started {raw['started_at']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "apply (holder unknown)"
