"""Writing a small new file durably without letting go of the GIL.

`os.open`, `os.write` and `os.fsync` each release the GIL around their system call and must
take it back afterwards. In a busy apply (an event loop plus worker threads hashing, probing
and copying) every one of those hand-backs can wait a whole switch interval (5 ms) behind
another thread, so the seven calls that make a journal entry durable took up to 300 ms at the
99th percentile while the same calls alone took 7 ms. The journal entry is what makes a paid
task findable after a crash: nothing should run between a create's answer and its entry on
disk. Through `ctypes.PyDLL` the same libc calls keep the GIL, so the write costs what the
disk costs (`python benchmarks/apply_bench.py journal`). Other threads wait a few
milliseconds; the event loop was waiting anyway.

Linux only (where libc's `open` takes its mode as an ordinary third argument); elsewhere,
or if libc cannot be loaded, `write_new` is the same sequence through `os`.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _load() -> Any:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held through each call
        libc.open.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_uint)
        libc.write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        libc.write.restype = ctypes.c_ssize_t
        libc.fsync.argtypes = libc.close.argtypes = (ctypes.c_int,)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load()


def _check(result: int, path: Path) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return result


def _retry(call: Any, path: Path, *args: Any) -> int:
    """A libc call retried on EINTR, as `os` does (PEP 475)."""
    while True:
        try:
            return _check(call(*args), path)
        except InterruptedError:
            continue


def write_new(path: Path, data: bytes, *, mode: int = 0o666) -> None:
    """Create `path` exclusively (FileExistsError if it exists), write `data`, fsync it and
    its directory. On a failure after the create the partial file is removed."""
    if _libc is None:
        _write_new_os(path, data, mode)
        return
    name = os.fsencode(path)
    fd = _retry(_libc.open, path, name, _FLAGS, mode)
    try:
        done = 0
        while done < len(data):
            done += _retry(_libc.write, path, fd, data[done:], len(data) - done)
        _retry(_libc.fsync, path, fd)
    except OSError:
        _libc.close(fd)
        path.unlink(missing_ok=True)
        raise
    _libc.close(fd)
    try:
        dir_fd = _retry(_libc.open, path.parent, os.fsencode(path.parent), _DIR_FLAGS, 0)
    except OSError:
        return  # a directory that cannot be opened cannot be fsync'd either (as fsutil.fsync_dir)
    _libc.fsync(dir_fd)  # unchecked, as fsutil.fsync_dir: some file systems cannot fsync a directory
    _libc.close(dir_fd)


def _write_new_os(path: Path, data: bytes, mode: int) -> None:
    from sparkspec.fsutil import fsync_dir

    fd = os.open(path, _FLAGS, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    fsync_dir(path.parent)
