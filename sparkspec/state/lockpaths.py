"""Which paths a lock may name: sparkspec reads, writes and deletes only its own outputs.

A lock is a file anyone can edit or merge, so its paths are checked before anything
acts on them. Every video and last-frame path must be relative, spelled plainly (no
`..`, no `.`, no empty part, no backslash) and named as sparkspec names that output
(`<scene>.mp4`, `<scene>.last.png`, `<sequence>.mp4`; take k of a scene is at the
scene's names or at `<scene>.take<k>.mp4` and `.take<k>.last.png`); the file, symlinks followed, must
stay inside the folder it is named in, and that folder inside the project. A lock that
breaks this is refused before anything is deleted or written.

Outputs of an earlier `output_dir` (inside the project) are accepted, so changing the
folder restores from the cache as planned, but only files in today's output folder are
ever deleted.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath

from sparkspec.errors import StatePathError
from sparkspec.state.lockfile import FileRecord, Lock


RESTORE_OR_DELETE = "restore it from git, or delete it to plan afresh (the cache keeps what was rendered)"
LEAVES_PROJECT = "leaves the project folder (through a symlink)"
LEAVES_FOLDER = "is a symlink leaving its folder"
SYMLINK_LOOP = "is a symlink loop (a link that leads back to itself)"
ON_DISK = (LEAVES_PROJECT, LEAVES_FOLDER, SYMLINK_LOOP)  # problems of what stands on disk, not of the lock's text


def check_lock_paths(lock: Lock, lock_name: str, root: Path) -> None:
    """Raise StatePathError for the first path in `lock` that is not an output of its own."""
    real_root = root.resolve()
    folders: dict[str, Path] = {}  # each folder resolved once: a lock's outputs share one or two
    for sid, scene in sorted(lock.scenes.items()):
        for where, record in [(f"scenes.{sid}", scene),
                              *((f"scenes.{sid}.takes[{i}]", t) for i, t in enumerate(scene.takes))]:
            stems = (sid, f"{sid}.take{record.take}")
            _check(record.video, tuple(f"{s}.mp4" for s in stems), f"{where}.video", lock_name, root, real_root,
                   folders)
            _check(record.last_frame, tuple(f"{s}.last.png" for s in stems), f"{where}.last_frame", lock_name,
                   root, real_root, folders)
    for name, sequence in sorted(lock.sequences.items()):
        _check(sequence.video, (f"{name}.mp4",), f"sequences.{name}.video", lock_name, root, real_root, folders)
    _check_owners(lock, lock_name)


def _check_owners(lock: Lock, lock_name: str) -> None:
    """Each output file belongs to one take of one scene, or to one sequence: a lock where two
    records name one file (edited, or merged by hand) would have the delete of one remove the
    other's output. (A scene's top-level fields are its picked take's: the same record.)"""
    owners: dict[str, str] = {}
    files = [(f"scenes.{sid}" + (f" take {n}" if entry.takes else ""), f)
             for sid, entry in sorted(lock.scenes.items())
             for n, take in sorted(entry.take_records().items()) for f in (take.video, take.last_frame)]
    files += [(f"sequences.{name}", sequence.video) for name, sequence in sorted(lock.sequences.items())]
    for owner, record in files:
        path = posixpath.normpath(record.path)
        other = owners.setdefault(path, owner)
        if other != owner:
            raise StatePathError(f"{lock_name}: {owner} names {record.path!r}, which {other} names too; each "
                                 "output belongs to one scene's take or one sequence, so sparkspec refuses this "
                                 f"lock: {RESTORE_OR_DELETE}")


def _check(record: FileRecord, file_names: tuple[str, ...], where: str, lock_name: str, root: Path,
           real_root: Path, folders: dict[str, Path]) -> None:
    problem = _problem(record.path, file_names, root, real_root, folders)
    if problem is None:
        return
    if problem in ON_DISK:  # the lock is right; what is on disk at that path is not sparkspec's
        raise StatePathError(f"{lock_name}: {where}.path {record.path!r} {problem}; sparkspec touches only "
                             "its own outputs inside the project, so it stops here: remove the symlink (or "
                             "point it inside the project) and run the command again")
    raise StatePathError(f"{lock_name}: {where}.path {record.path!r} {problem}; sparkspec touches only "
                         f"its own outputs inside the project, so it refuses this lock: {RESTORE_OR_DELETE}")


def _problem(path: str, file_names: tuple[str, ...], root: Path, real_root: Path,
             folders: dict[str, Path]) -> str | None:
    if "\\" in path or "\0" in path or path.startswith("/") or PurePosixPath(path).is_absolute():
        return "is not a relative path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "is not a plain relative path (no '..', '.' or empty parts)"
    if parts[-1] not in file_names:
        return f"is not the output sparkspec writes there (expected .../{' or '.join(file_names)})"
    name = "/".join(parts[:-1])
    folder = folders.get(name)
    try:
        if folder is None:
            folder = folders[name] = (root / name).resolve() if name else real_root
        if folder != real_root and real_root not in folder.parents:
            return LEAVES_PROJECT
        target = root / path
        if os.path.islink(target):
            resolved = target.resolve()
            if folder not in resolved.parents:
                return LEAVES_FOLDER
    except RuntimeError:  # Python 3.11's word for a symlink loop
        return SYMLINK_LOOP
    return None


def in_output_folder(path: str, output_dir: str) -> bool:
    """`path` (checked by `check_lock_paths`) names a file directly in today's output folder."""
    folder = posixpath.normpath(output_dir)
    return posixpath.dirname(path) == ("" if folder == "." else folder)
