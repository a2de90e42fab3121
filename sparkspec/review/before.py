"""Before / after: the previous render of every scene the last apply changed, copied from the
cache into `<output_dir>/before/` so the page shows it with nothing but the files beside it.

The folder is the record of the last apply's changes: a page rewritten later (by an apply
that had nothing to do) finds the same files. Names carry the video's digest, so a file
already there is the right one and is not copied again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from sparkspec.errors import StatePathError
from sparkspec.fsutil import atomic_copy, atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.state.cache import Cache
from sparkspec.state.lockfile import Lock

FOLDER = "before"
_NAME = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})\.([0-9a-f]{12})\.mp4$")


def changed_scenes(previous: Lock, current: Lock) -> frozenset[str]:
    """Scenes in both locks whose picked video differs."""
    return frozenset(sid for sid, record in current.scenes.items()
                     if sid in previous.scenes and previous.scenes[sid].video.sha256 != record.video.sha256)


def new_renders(previous: Lock, current: Lock) -> dict[str, frozenset[int]]:
    """Scene -> the takes whose render is new since `previous` (every take of a new scene): what
    an apply rendered or installed, whether or not it moved the picked video."""
    fresh: dict[str, frozenset[int]] = {}
    for sid, record in current.scenes.items():
        old = previous.scenes.get(sid)
        before = {n: t.video.sha256 for n, t in old.take_records().items()} if old is not None else {}
        takes = frozenset(n for n, t in record.take_records().items() if before.get(n) != t.video.sha256)
        if takes:
            fresh[sid] = takes
    return fresh


def record_before(output: Path, previous: Lock, changed: frozenset[str], cache: Cache) -> dict[str, str]:
    """Copy each changed scene's previous video out of the cache into `output/before/`, drop what
    an earlier apply left there, and return scene -> path relative to `output`."""
    folder = output / FOLDER
    if folder.is_symlink() or (folder.exists() and not folder.resolve().is_relative_to(output.resolve())):
        # Its copies would be written, and old ones deleted, wherever the link points.
        raise StatePathError(f"{folder}: a symlink out of the output folder; sparkspec writes the previous "
                             "renders only inside it: remove the symlink")
    wanted: dict[str, str] = {}
    for sid in sorted(changed):
        old = previous.scenes[sid].video
        name = f"{sid}.{old.sha256[:12]}.mp4"
        dest = folder / name
        blob = cache.blob_path(old.sha256)
        if not (dest.is_file() and dest.stat().st_size == old.bytes):
            if not cache.has_blob(old.sha256, old.bytes):
                continue  # collected by gc: the card says the previous render is gone
            atomic_copy(blob, dest)
        wanted[sid] = f"{FOLDER}/{name}"
    if folder.is_dir():
        keep = {Path(rel).name for rel in wanted.values()}
        for stale in folder.iterdir():
            if _NAME.match(stale.name) and stale.name not in keep:
                stale.unlink(missing_ok=True)
    return wanted


def found_before(output: Path, current: Lock) -> dict[str, str]:
    """What an earlier apply left in `output/before/`, for scenes still in the lock."""
    folder = output / FOLDER
    if not folder.is_dir() or folder.is_symlink():
        return {}
    found: dict[str, str] = {}
    for file in sorted(folder.iterdir()):
        match = _NAME.match(file.name)
        record = current.scenes.get(match.group(1)) if match else None
        if match and record is not None and not record.video.sha256.startswith(match.group(2)):
            found[match.group(1)] = f"{FOLDER}/{file.name}"
    return found


MARKS = "last-apply.json"  # in the state folder's review/: the takes and scenes the last apply made anew


def save_marks(folder: Path, fresh: Mapping[str, frozenset[int]], new: frozenset[str], lock: Lock) -> None:
    """Remember what the last apply rendered anew (each take with its video's digest), so a
    page made again by an apply that renders nothing marks the same takes."""
    takes = {sid: {str(n): lock.scenes[sid].take_records()[n].video.sha256 for n in sorted(numbers)
                   if n in lock.scenes[sid].take_records()}
             for sid, numbers in sorted(fresh.items()) if sid in lock.scenes}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKS, json.dumps({"takes": takes, "new": sorted(new)}, sort_keys=True) + "\n")


def load_marks(folder: Path, lock: Lock) -> tuple[dict[str, frozenset[int]], frozenset[str]]:
    """What `save_marks` remembered, for the takes the lock still records with those renders."""
    try:
        raw = load_json((folder / MARKS).read_text(encoding="utf-8"))
        takes, new = raw["takes"], raw["new"]
        if not isinstance(takes, dict) or not isinstance(new, list):
            return {}, frozenset()
        fresh: dict[str, frozenset[int]] = {}
        for sid, numbered in takes.items():
            record = lock.scenes.get(sid)
            if record is None or not isinstance(numbered, dict):
                continue
            recorded = record.take_records()
            kept = frozenset(int(n) for n, sha in numbered.items() if str(n).isdigit() and int(n) in recorded
                             and recorded[int(n)].video.sha256 == sha)
            if kept:
                fresh[sid] = kept
        return fresh, frozenset(str(sid) for sid in new if sid in fresh)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, frozenset()  # none, or damaged: nothing is marked new
