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

A caller whose data may end in spaces (JSON) can have it padded to whole 512-byte sectors
and written with O_DIRECT: the disk then gets one sector, where a buffered write of the
same 250 bytes dirties a 4 KB page of the page cache and writes all of it (the journal
entry was 4 KB of every task's bytes written: `python benchmarks/apply_scale.py`). A file
system that refuses O_DIRECT (EINVAL) gets the buffered sequence, from then on.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
from pathlib import Path
from typing import Any

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_DIRECT = getattr(os, "O_DIRECT", 0)
SECTOR = 512  # O_DIRECT's unit on most disks; one that wants 4096 refuses it, and is written buffered
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
        write_from = libc["write"]  # a second prototype of write, from an aligned buffer
        write_from.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
        write_from.restype = ctypes.c_ssize_t
        setattr(libc, "write_from", write_from)
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


class _Held:
    """The four calls through libc, the GIL kept."""

    @staticmethod
    def open(path: Path, flags: int, mode: int) -> int:
        return _retry(_libc.open, path, os.fsencode(path), flags, mode)

    @staticmethod
    def write(fd: int, data: bytes, path: Path) -> int:
        return _retry(_libc.write, path, fd, data, len(data))

    @staticmethod
    def write_aligned(fd: int, buffer: mmap.mmap, path: Path) -> int:
        # The call gets the buffer's address, not a ctypes view of it: a view held by a failed
        # call's traceback (its arguments) kept the mmap from closing, and a full disk's OSError
        # became a BufferError that nothing handled (the journal's ENOSPC ended the apply).
        view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
        address = ctypes.addressof(view)
        del view  # the buffer can be closed once nothing points into it; the memory stays until then
        return _retry(_libc.write_from, path, fd, address, len(buffer))

    @staticmethod
    def fsync(fd: int, path: Path) -> None:
        _retry(_libc.fsync, path, fd)

    @staticmethod
    def close(fd: int) -> None:
        _libc.close(fd)


class _Released:
    """The same four through `os`, which gives the GIL back around each."""

    @staticmethod
    def open(path: Path, flags: int, mode: int) -> int:
        return os.open(path, flags, mode)

    @staticmethod
    def write(fd: int, data: bytes, path: Path) -> int:
        return os.write(fd, data)

    @staticmethod
    def write_aligned(fd: int, buffer: mmap.mmap, path: Path) -> int:
        return os.write(fd, buffer)  # the mmap's own memory: no copy, so still aligned

    @staticmethod
    def fsync(fd: int, path: Path) -> None:
        os.fsync(fd)

    @staticmethod
    def close(fd: int) -> None:
        os.close(fd)


_direct = _DIRECT != 0  # until a file system refuses it


def write_new(path: Path, data: bytes, *, mode: int = 0o666, pad: bool = False) -> None:
    """Create `path` exclusively (FileExistsError if it exists), write `data`, fsync it and
    its directory. On a failure after the create the partial file is removed. `pad`: `data`
    may be followed by spaces up to a whole sector, and is then written with O_DIRECT."""
    calls: type[_Held] | type[_Released] = _Released if _libc is None else _Held
    if not (pad and _direct and _write_direct(calls, path, data, mode)):
        fd = calls.open(path, _FLAGS, mode)
        try:
            done = 0
            while done < len(data):
                done += calls.write(fd, data[done:], path)
            calls.fsync(fd, path)
        except OSError:
            calls.close(fd)
            path.unlink(missing_ok=True)
            raise
        calls.close(fd)
    _sync_folder(calls, path.parent)


def _write_direct(calls: type[_Held] | type[_Released], path: Path, data: bytes, mode: int) -> bool:
    """`data` padded with spaces to whole sectors, written with O_DIRECT from page-aligned
    memory and fsync'd (the file's size and blocks). False, with no file left, where the file
    system refuses O_DIRECT: the caller writes it buffered, as every later call will."""
    global _direct
    size = -(-len(data) // SECTOR) * SECTOR
    with mmap.mmap(-1, size) as buffer:
        buffer.write(data.ljust(size, b" "))
        try:
            fd = calls.open(path, _FLAGS | _DIRECT, mode)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _direct = False
            return False
        try:
            written = calls.write_aligned(fd, buffer, path)
            if written == size:
                calls.fsync(fd, path)
        except OSError as exc:
            calls.close(fd)
            path.unlink(missing_ok=True)
            if exc.errno != errno.EINVAL:
                raise
            _direct = False
            return False
        calls.close(fd)
    if written != size:  # never seen for one sector; written again the ordinary way
        path.unlink(missing_ok=True)
        return False
    return True


# -- an append-only log of whole sectors ---------------------------------------------------
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


class SectorLog:
    """A file that grows by whole sectors, each append fsync'd before it returns, through the
    same GIL-keeping calls as `write_new`; O_DIRECT where the file system takes it (a sector
    reaches the disk, not a page). Created on first open, its folder then fsync'd: the name is
    as durable as what is appended. A failed append leaves the file as it was."""

    def __init__(self, path: Path, *, mode: int = 0o666) -> None:
        self.path = path
        self.calls: type[_Held] | type[_Released] = _Released if _libc is None else _Held
        created = not path.exists()
        self.direct = _direct
        self.fd = self._open(mode)
        self.size = os.fstat(self.fd).st_size
        if self.size % SECTOR:  # a part of a sector at the end (a torn buffered append): the
            # next record starts at the next sector, where readers look for it
            self.calls.close(self.fd)
            fd = self.calls.open(path, _LOG_FLAGS, mode)
            try:
                pad = b" " * (SECTOR - 1 - self.size % SECTOR) + b"\n"
                self.calls.write(fd, pad, path)
                self.calls.fsync(fd, path)
            finally:
                self.calls.close(fd)
            self.fd = self._open(mode)
            self.size = os.fstat(self.fd).st_size
        if created:
            _sync_folder(self.calls, path.parent)

    def _open(self, mode: int) -> int:
        global _direct
        if self.direct:
            try:
                return self.calls.open(self.path, _LOG_FLAGS | _DIRECT, mode)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                _direct = self.direct = False
        return self.calls.open(self.path, _LOG_FLAGS, mode)

    def append(self, data: bytes) -> int:
        """`data`, padded with spaces to whole sectors, at the end of the file, fsync'd: the
        offset it was written at (the file's size before: another writer of the file in this
        process, one at a time, may have appended since the last call)."""
        size = -(-len(data) // SECTOR) * SECTOR
        self.size = os.fstat(self.fd).st_size
        try:
            if self.direct:
                with mmap.mmap(-1, size) as buffer:
                    buffer.write(data.ljust(size, b" "))
                    written = self.calls.write_aligned(self.fd, buffer, self.path)
                if written != size:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            else:
                padded, done = data.ljust(size, b" "), 0
                while done < size:
                    done += self.calls.write(self.fd, padded[done:], self.path)
            self.calls.fsync(self.fd, self.path)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)  # a part of the record must not be read as one
            except OSError:
                pass
            raise
        self.size += size
        return self.size - size

    def is_at(self, path: Path) -> bool:
        """This file is still the one at `path` (not deleted or replaced since it was opened)."""
        try:
            here, there = os.fstat(self.fd), os.stat(path)
        except OSError:
            return False
        return here.st_nlink > 0 and (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def close(self) -> None:
        self.calls.close(self.fd)


def _sync_folder(calls: type[_Held] | type[_Released], folder: Path) -> None:
    try:  # as fsutil.fsync_dir: a directory that cannot be opened or fsync'd is left as it is
        dir_fd = calls.open(folder, _DIR_FLAGS, 0)
    except OSError:
        return
    try:
        calls.fsync(dir_fd, folder)
    except OSError:
        pass
    finally:
        calls.close(dir_fd)
