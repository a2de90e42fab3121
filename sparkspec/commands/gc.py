"""`sparkspec gc`: drop cache entries and blobs that no lock refers to.

A cache may be shared by several projects (SPARKSPEC_CACHE_DIR), so every apply
registers its lock in the cache (projects/<sha256 of the lock's path>), and gc
keeps whatever any registered lock that still exists refers to. Dropping is the
only way a paid render leaves the cache, so `--dry-run` lists first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from sparkspec.commands import size_text
from sparkspec.errors import SparkspecError
from sparkspec.state.cache import Cache, cache_dir
from sparkspec.fsutil import atomic_write_text
from sparkspec.state.lockfile import lock_path, read_lock

PROJECTS = "projects"


def register_project(cache_directory: Path, lock: Path) -> None:
    """Note that `lock` keeps entries of this cache alive (idempotent)."""
    where = str(lock.resolve())
    entry = cache_directory / PROJECTS / hashlib.sha256(where.encode()).hexdigest()
    if not entry.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, where + "\n")


def registered_locks(cache_directory: Path) -> list[Path]:
    folder = cache_directory / PROJECTS
    if not folder.is_dir():
        return []
    return sorted(Path(p.read_text(encoding="utf-8").strip()) for p in folder.iterdir()
                  if not p.name.startswith("."))


def collect(spec: Path, dry_run: bool = False, environ: Mapping[str, str] = os.environ) -> list[str]:
    from sparkspec.state.applylock import apply_lock

    from sparkspec.config.loader import require_spec

    require_spec(spec, str(spec))  # no project here: not "the cache is empty"
    root = spec.resolve().parent
    state_dir = root / ".sparkspec"
    cache = Cache(cache_dir(state_dir, environ))
    if not cache.directory.is_dir():
        return ["The cache is empty; nothing to drop."]
    own = lock_path(spec.resolve())
    with apply_lock(state_dir, command="gc", cache=cache.directory):
        if not cache.exists():
            return ["The cache is empty; nothing to drop."]
        locks = sorted({own, *registered_locks(cache.directory)})
        keep_keys: set[str] = set()
        keep_blobs: set[str] = set()
        cached_tasks: set[str] = set()  # the tasks whose renders stay in the cache
        for path in locks:
            try:
                lock, _ = read_lock(path)
            except SparkspecError as exc:
                if path == own:
                    raise
                raise SparkspecError(f"{path}: the lock of another project that shares this cache cannot be read, "
                                     f"so gc stops rather than drop what it may refer to; fix it there ({exc})") from None
            for entry in lock.scenes.values():
                for record in entry.take_records().values():
                    keep_keys.add(record.key)
                    keep_blobs.update((record.video.sha256, record.last_frame.sha256))
        lines: list[str] = []
        verb = "would drop" if dry_run else "dropped"
        try:
            dropped_keys = 0
            for key in sorted(cache.keys()):
                render = cache.entry(key)
                if key in keep_keys:
                    if render is not None:
                        keep_blobs.update((render.video_sha256, render.last_frame_sha256))
                        cached_tasks.add(render.task_id)
                    continue
                dropped_keys += 1
                lines.append(f"{verb} render {key[:12]}" + (f" (task {render.task_id})" if render else ""))
                if not dry_run:
                    cache.drop(key)
            freed = dropped_blobs = 0
            for sha, blob in list(cache.blobs()):
                if sha in keep_blobs:
                    continue
                size = blob.stat().st_size
                freed += size
                dropped_blobs += 1
                lines.append(f"{verb} blob {sha[:12]} ({size_text(size)})")
                if not dry_run:
                    blob.unlink(missing_ok=True)
        finally:
            cache.close()
        scratch, scratch_bytes = _local_scratch(state_dir, verb, dry_run, cached_tasks)
    summary = (f"{'Would drop' if dry_run else 'Dropped'} {dropped_keys} render(s) and {dropped_blobs} "
               f"blob(s), {size_text(freed + scratch_bytes)}; kept what {len(locks)} lock(s) refer to.")
    return lines + scratch + [summary]


def _local_scratch(state_dir: Path, verb: str, dry_run: bool, cached_tasks: set[str]) -> tuple[list[str], int]:
    """The local renderer's task folders, once collected into the cache, are copies; the ones
    the journal still names are renders an interrupted apply has yet to collect. A folder whose
    render the cache does not keep goes too: no lock refers to it (it renders again for free)."""
    import shutil

    from sparkspec.state.journal import Journal

    folder = state_dir / "local"
    if not folder.is_dir():
        return [], 0
    pending = {entry.task_id for entry in Journal(state_dir / "journal").entries()}
    lines, freed = [], 0
    for task in sorted(folder.iterdir()):
        if task.name in pending or not task.is_dir():
            continue
        size = sum(f.stat().st_size for f in task.rglob("*") if f.is_file())
        freed += size
        why = "already in the cache" if task.name in cached_tasks else "no lock refers to its render"
        lines.append(f"{verb} local task {task.name} ({size_text(size)}, {why})")
        if not dry_run:
            shutil.rmtree(task, ignore_errors=True)
    return lines, freed
