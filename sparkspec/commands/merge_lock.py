"""`sparkspec merge-lock BASE OURS THEIRS`: git's merge driver for project.spark.lock.

git runs it as `sparkspec merge-lock %O %A %B` and reads the result from `%A`; exit 0
means merged, anything else leaves git's conflict in place. A file that is not a lock is
an error (exit 1) and `%A` is left as it was.
"""

from __future__ import annotations

from pathlib import Path

from sparkspec.state.lockfile import write_lock
from sparkspec.state.lockmerge import merge_locks, read_lock_or_empty


def merge_lock_files(base: Path, ours: Path, theirs: Path) -> list[str]:
    """Merge into `ours`; the lines say which entries both sides changed (ours was kept)."""
    merged = merge_locks(read_lock_or_empty(base), read_lock_or_empty(ours), read_lock_or_empty(theirs))
    write_lock(ours, merged.lock)
    return [f"merge-lock: {address} changed on both sides; kept ours, the next `sparkspec plan` "
            "reconciles it from the caches" for address in merged.kept_ours]
