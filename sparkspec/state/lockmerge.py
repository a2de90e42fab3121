"""Three-way merge of project.spark.lock, entry by entry (DESIGN section 9, `merge-lock`).

A lock is a map of independent entries (scenes and sequences by name), so git's line
merge is the wrong tool: two branches that each render a different scene touch the same
lines and conflict. Here every entry merges on its own:

- changed on one side only: that side's entry (added, changed or removed);
- changed on both sides the same way: that entry;
- changed on both sides differently (a removal counts as a change): ours, the branch
  being merged into (git's `%A`). Its renders are the ones in this checkout's renders/,
  so the lock keeps telling the truth about them. The other side's render is in a cache
  (local or remote) under its key, so the next `plan` reconciles the entry with the
  merged spec at no cost (`reuse` or `pull`).

The result never has conflict markers: it is a lock written by `Lock.to_text`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sparkspec.errors import StatePathError
from sparkspec.state.lockfile import Lock, read_lock


class _Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Record)


@dataclass(frozen=True)
class LockMerge:
    lock: Lock
    kept_ours: tuple[str, ...]  # addresses (`scene.intro`) both sides changed differently


def merge_locks(base: Lock, ours: Lock, theirs: Lock) -> LockMerge:
    scenes, scene_conflicts = _merge_entries(base.scenes, ours.scenes, theirs.scenes)
    sequences, sequence_conflicts = _merge_entries(base.sequences, ours.sequences, theirs.sequences)
    kept = tuple(f"scene.{name}" for name in scene_conflicts) + tuple(
        f"sequence.{name}" for name in sequence_conflicts)
    return LockMerge(Lock(scenes, sequences), kept)


def _merge_entries(base: Mapping[str, R], ours: Mapping[str, R],
                   theirs: Mapping[str, R]) -> tuple[dict[str, R], list[str]]:
    merged: dict[str, R] = {}
    conflicts: list[str] = []
    for name in sorted({*base, *ours, *theirs}):
        b, o, t = (_content(side.get(name)) for side in (base, ours, theirs))
        if o == t or t == b:
            chosen = ours.get(name)
        elif o == b:
            chosen = theirs.get(name)
        else:
            chosen = ours.get(name)
            conflicts.append(name)
        if chosen is not None:
            merged[name] = chosen
    return merged, conflicts


def _content(record: _Record | None) -> dict[str, Any] | None:
    return None if record is None else record.to_json()


def read_lock_or_empty(path: Path) -> Lock:
    """git hands an empty file as BASE when the lock was added on both branches."""
    try:
        if not path.read_bytes().strip():
            return Lock()
    except FileNotFoundError:
        raise StatePathError(f"{path}: no such file") from None
    except OSError:
        pass  # read_lock names the file and the problem
    return read_lock(path)[0]
