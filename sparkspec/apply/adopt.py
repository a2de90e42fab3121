"""Renders known only from renders/ (a fresh clone, another machine's cache): adopted into the
local cache, verified by the lock's sha256, so a new pick moves them instead of paying again."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Iterable, Mapping

from sparkspec.errors import MediaError
from sparkspec.plan.model import Action, Change
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.lockfile import FileRecord, SceneRecord
from sparkspec.fsutil import sha256_file
from sparkspec.state.workspace import Workspace


def render_of(record: SceneRecord) -> CachedRender:
    """The cache entry a lock record stands for."""
    return CachedRender(key=record.key, provider=record.provider, model=record.model, task_id=record.task_id,
                        seed=record.seed, tokens=record.tokens, video_sha256=record.video.sha256,
                        video_bytes=record.video.bytes, last_frame_sha256=record.last_frame.sha256,
                        last_frame_bytes=record.last_frame.bytes, inputs=record.inputs,
                        seed_derived=record.seed_derived, cost=record.cost,
                        last_frame_extracted=record.last_frame_extracted,
                        rendered_frame_sha256=record.rendered_frame_sha256)


def adopt(cache: Cache, workspace: Workspace, record: SceneRecord) -> CachedRender | None:
    """Put `record`'s files, where the lock says they are, into the cache and index them; None
    when a file is missing or not the bytes the lock names (nothing is adopted then)."""
    if not _adopt_files(cache, workspace, (record.video, record.last_frame)):
        return None
    render = render_of(record)
    cache.record(render)
    return render


def adopt_decoding_frame(cache: Cache, workspace: Workspace, record: SceneRecord) -> CachedRender | None:
    """`record`'s video, where the lock says it is, into the cache with a last frame decoded
    from it again (the one recorded is lost here and in every cache), indexed: the render of
    the key from now on. None when the video is missing or not the bytes the lock names.
    MediaError when it cannot be decoded."""
    from sparkspec.media.frames import extract_last_frame

    if not _adopt_files(cache, workspace, (record.video,)):
        return None
    frame = cache.directory / f".{record.key}.{secrets.token_hex(4)}.frame.part"
    try:
        sha, size = extract_last_frame(cache.blob_path(record.video.sha256), frame)
        cache.put_blob(frame, sha)
    finally:
        frame.unlink(missing_ok=True)
    # Scenes chained after it stay keyed by the render's own last frame: the stand-in is what
    # renders/ holds and what a scene rendered after it starts from, not a new render of the key.
    render = dataclasses.replace(render_of(record), last_frame_sha256=sha, last_frame_bytes=size,
                                 last_frame_extracted=True,
                                 rendered_frame_sha256=None if sha == record.frame_identity else record.frame_identity)
    cache.record(render)
    return render


def _adopt_files(cache: Cache, workspace: Workspace, files: Iterable[FileRecord]) -> bool:
    """`files`, where the lock says they are, into the cache's blobs: False when one is missing
    or not the bytes the lock names (none is put in then)."""
    root = workspace.project.root
    staged = []
    try:
        for wanted in files:
            if cache.has_blob(wanted.sha256, wanted.bytes):
                continue
            path = root / wanted.path
            if path.stat().st_size != wanted.bytes:
                return False
            copy = cache.directory / f".{wanted.sha256}.{secrets.token_hex(4)}.adopt.part"  # two scenes may share it
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
            staged.append((copy, wanted.sha256))
            if sha256_file(copy) != wanted.sha256:
                return False
        for copy, sha in staged:
            cache.put_blob(copy, sha)
    except OSError:
        return False
    finally:
        for copy, _ in staged:
            copy.unlink(missing_ok=True)
    return True


def adopt_moved(workspace: Workspace, scenes: Mapping[str, SceneRecord], changes: Iterable[Change]) -> None:
    """Before apply moves or deletes anything: each render a restore or a reuse will install
    that the cache lacks is adopted from where the lock has it (the take's own files, or
    another scene's of the same key: the plan chose so because they are there); and each
    render the lock records that the apply will overwrite or delete (an edit, a dropped take,
    a scene gone from the spec), so that reverting the edit is a reuse, not a new payment."""
    cache = workspace.cache
    changes = list(changes)
    _adopt_replaced(workspace, scenes, changes)
    by_key: dict[str, list[SceneRecord]] = {}
    for recorded in scenes.values():
        for take in recorded.take_records().values():
            by_key.setdefault(take.key, []).append(take)
    for change in changes:
        if change.kind != "scene" or change.action not in (Action.RESTORE, Action.REUSE) or change.key is None:
            continue
        if change.same_as is not None or cache.lookup(change.key) is not None:
            continue
        entry = scenes.get(change.id)
        own = entry.take_records().get(change.take) if entry is not None else None
        if change.frame_from_video:  # its video, before another take's move may overwrite it
            if own is not None:
                try:
                    adopt_decoding_frame(cache, workspace, own)
                except MediaError:
                    pass  # the scene fails when it is applied, and says why
            continue
        candidates = ([own] if own is not None else []) + by_key.get(change.key, [])
        for record in candidates:
            if record.key == change.key and adopt(cache, workspace, record) is not None:
                break


def _adopt_replaced(workspace: Workspace, scenes: Mapping[str, SceneRecord], changes: list[Change]) -> None:
    """The recorded renders whose files this apply replaces with another key's or deletes, and
    that the cache lacks (a clone with renders/ and no cache): adopted while still there.
    A file that no longer matches the lock is left alone (it is not the render paid for)."""
    cache = workspace.cache
    for change in changes:
        if change.kind != "scene" or change.action is Action.NOOP:
            continue
        entry = scenes.get(change.id)
        if entry is None:
            continue
        records = entry.take_records()
        whole = change.action is Action.DELETE and change.id not in workspace.project.scenes  # every take goes
        gone = records.values() if whole else [records[change.take]] if change.take in records else []
        for record in gone:
            if (change.action is Action.DELETE or record.key != change.key) and cache.lookup(record.key) is None:
                adopt(cache, workspace, record)
