"""Atomic writes and streaming hashes: the only way sparkspec puts bytes on disk.

Every file sparkspec writes (the lock, renders/, the cache, the journal, what `init`
writes) goes through `atomic_target`: a temporary file beside the target, fsync'd,
given the mode the user's umask implies (0644 under 022, like any other tool's files),
then renamed over the target, so a reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from typing import BinaryIO
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20


@functools.cache
def file_mode() -> int:
    """0666 less the process's umask: what `open(path, "w")` would have made."""
    try:  # Linux tells the umask without changing it (os.umask would race other threads)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to fill, with the umask's mode; when the block succeeds
    it is fsync'd and renamed over `path`. On any failure the temporary file goes. The mode is
    set as the file is made: a chmod after the fsync dirtied its inode again, about 300 bytes
    more written per file (benchmarks/RESULTS.md, session 9)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, name):
            # A failed write names no file, a failed rename names the temporary one: name the
            # one being written. Some libraries' OSError subclasses (PyAV's) make `filename`
            # read-only, so those become a plain OSError.
            try:
                exc.filename = str(path)
            except AttributeError:
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, dest: Path) -> None:
    with atomic_target(dest) as tmp:
        try:
            shutil.copyfile(source, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                # shutil names the source first; the disk that is full is the one written to.
                raise OSError(exc.errno, exc.strerror, str(dest)) from exc
            raise


def atomic_move(source: Path, dest: Path, *, synced: bool = True) -> None:
    """Move a finished, fsync'd file to `dest` by rename; across filesystems, by an atomic
    copy. `source` is gone afterwards either way. `synced=False`: the rename is not fsync'd
    here (the caller notes it in `state.unsynced`, flushed before anything names it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if os.stat(source).st_mode & 0o7777 != file_mode():  # a chmod costs an inode write
            os.chmod(source, file_mode())
        os.replace(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        atomic_copy(source, dest)
        source.unlink(missing_ok=True)
        return
    if synced:
        fsync_dir(dest.parent)


# What atomic_target (mkstemp's eight characters) and a hard link into place
# (apply.outputs: eight hex digits) leave beside their target when the process is killed.
_LEFT_BEHIND = re.compile(r"\..+\.(?:[a-z0-9_]{8}\.tmp|[0-9a-f]{8}\.link)")


def remove_left_behind(folder: Path) -> int:
    """Delete the temporary files a killed sparkspec left in `folder` (its own names only, the
    caller holding the apply lock, so none is in use). How many went; errors are ignored."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(".") and _LEFT_BEHIND.fullmatch(entry.name):
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                pass
    return removed


def folder_id(path: Path) -> tuple[int, int] | None:
    """`path`'s (device, inode), None when it is not there: a folder deleted and made again
    under the same name is another folder."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


NOT_A_FILE = "not a regular file (a FIFO, a socket or a device)"


def open_regular(path: Path | str) -> BinaryIO:
    """`path` opened for reading, if it is a regular file: a FIFO, a socket or a device where
    sparkspec expects a file (a spec, a lock, an output) is an OSError (ENXIO), not a read that
    waits for a writer that never comes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody writes to, a device without its driver
            raise
        fd = -1
    mode = os.fstat(fd).st_mode if fd >= 0 else 0
    if not stat.S_ISREG(mode):
        if fd >= 0:
            os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        raise OSError(errno.ENXIO, NOT_A_FILE, str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: Path | str) -> bytes:
    """The bytes of the regular file `path` (see `open_regular`)."""
    with open_regular(path) as stream:
        return stream.read()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
