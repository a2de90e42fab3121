"""`push` and `pull`: make the remote hold what the lock refers to, or renders/ hold it.

Push uploads every render the lock refers to (and every queued upload) that the remote
lacks, in transfer's order (blobs with their checksum, HEAD check, then the write-once
entry), then registers a root, `roots/<project>/<digest>.json`, naming the lock's keys so
`remote gc` keeps them. A render missing from the local cache whose files in renders/ still
match the lock is taken from renders/ (hashed first). Pull fills renders/ with what the lock
says, from the local cache, or from the remote into the cache first: the lock names every
blob by its sha256, so pull fetches blobs by digest and checks them against the lock (two
requests a scene; no entry needs trusting). Both write only to the paths the spec gives a
scene (never a path read from the lock or the remote). Both carry every take the lock
records, named as apply names them (`hero`, `hero.take2`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sparkspec.apply.adopt import adopt, render_of
from sparkspec.errors import RemoteError
from sparkspec.plan.planner import output_paths
from sparkspec.remote.inventory import gather_bounded, present_blobs, present_entries
from sparkspec.remote.layout import project_slug, root_path
from sparkspec.remote.session import Remote
from sparkspec.remote.transfer import BlobProblem, check_format, ensure_format
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.state.lockfile import SceneRecord
from sparkspec.state.workspace import Workspace

ROOT_FORMAT = 1
TRANSFERS = 8  # blobs moving at once


@dataclass
class PushReport:
    pushed: dict[str, int] = field(default_factory=dict)  # key -> bytes uploaded (both blobs)
    present: int = 0  # already on the remote
    unavailable: dict[str, str] = field(default_factory=dict)  # scene -> why it cannot be pushed
    failed: dict[str, str] = field(default_factory=dict)  # key -> the store's words (queued again)
    repaired: dict[str, int] = field(default_factory=dict)  # key -> bytes of blobs uploaded again
    broken: dict[str, str] = field(default_factory=dict)  # key -> what is wrong with its entry, and what to do
    # key -> bytes of this machine's render's files uploaded beside an entry naming another render
    # of the key (a --replace re-roll): a lock naming this render pulls them by their digests
    shared: dict[str, int] = field(default_factory=dict)
    root: str | None = None


@dataclass
class PullReport:
    pulled: dict[str, int] = field(default_factory=dict)  # scene -> bytes downloaded
    restored: list[str] = field(default_factory=list)  # scenes written into renders/ from the cache
    in_place: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # scene or sequence -> what to do
    sequences: list[str] = field(default_factory=list)  # to stitch with `apply` (no render cost)


def _takes(workspace: Workspace) -> list[tuple[str, str, SceneRecord]]:
    """Every recorded take of every scene: (its name, the scene, its record)."""
    return [(sid if take == 1 else f"{sid}.take{take}", sid, record)
            for sid, entry in sorted(workspace.lock.scenes.items())
            for take, record in sorted(entry.take_records().items())]


def _wanted_files(workspace: Workspace, scene: str, record: SceneRecord) -> tuple[Path, Path] | None:
    """The take's files in renders/ if the lock names the paths the spec gives it, else None."""
    spec = workspace.project.scenes.get(scene)
    if spec is None:
        return None
    video, frame = output_paths(workspace.project, scene, record.take, spec.pick)
    if (record.video.path, record.last_frame.path) != (video, frame):
        return None
    return workspace.project.root / video, workspace.project.root / frame


def keys_in_renders(workspace: Workspace) -> set[str]:
    """The keys of the lock's takes whose two files in renders/ are what the lock records
    (hashed, or vouched for by the digest memo): what push can take from renders/."""
    found = set()
    for _, scene, record in _takes(workspace):
        files = _wanted_files(workspace, scene, record)
        if files is not None and _intact(workspace, record, files):
            found.add(record.key)
    return found


def _intact(workspace: Workspace, record: SceneRecord, files: tuple[Path, Path]) -> bool:
    """Both of the take's files are what the lock records."""
    return all(workspace.memo.sha256(p) == f.sha256 for p, f in zip(files, (record.video, record.last_frame)))


def _adopt_from_renders(workspace: Workspace, scene: str, record: SceneRecord) -> CachedRender | None:
    """Rebuild the cache entry of `record` from renders/, if both files are what the lock says."""
    if _wanted_files(workspace, scene, record) is None:
        return None
    return adopt(workspace.cache, workspace, record)


async def push_lock(remote: Remote, workspace: Workspace) -> PushReport:
    if not remote.writable:
        raise RemoteError(f"remote {remote.display} is read-only here (--remote-mode read-only or "
                          "SPARKSPEC_REMOTE_MODE); `sparkspec push` writes, so nothing was pushed")
    report = PushReport()
    scenes = {record.key: (name, sid, record) for name, sid, record in _takes(workspace)}
    queued = await asyncio.to_thread(remote.queue.keys)
    keys = list(dict.fromkeys([*scenes, *queued]))
    on_remote = await present_entries(remote.store, keys, remote.signer)
    report.present = sum(1 for k in keys if k in on_remote)
    cache = workspace.cache
    todo: list[CachedRender] = []
    for key in keys:
        if key in on_remote:
            continue
        render = await asyncio.to_thread(cache.lookup, key)
        if render is None and key in scenes:
            render = await asyncio.to_thread(_adopt_from_renders, workspace, *scenes[key][1:])
        if render is None:
            name = f"scene {scenes[key][0]}" if key in scenes else f"queued render {key[:12]}"
            report.unavailable[name] = ("not in the local cache and its files in renders/ do not match the "
                                        "lock; a machine that has it can push it")
            continue
        todo.append(render)

    async def push(render: CachedRender) -> None:
        try:
            created = await remote.push(render, cache)
        except RemoteError as exc:
            report.failed[render.key] = str(exc)
            await asyncio.to_thread(remote.queue.add, render.key)
            return
        if created:
            report.pushed[render.key] = render.video_bytes + render.last_frame_bytes
        else:
            report.present += 1

    await gather_bounded([push(r) for r in todo], TRANSFERS)
    await _repair(remote, workspace, {k: on_remote[k].size for k in keys if k in on_remote}, report)
    if scenes:
        report.root = await register_lock_root(remote, workspace)
    await asyncio.to_thread(remote.queue.remove, *[k for k in queued if k in on_remote])
    if scenes:
        await asyncio.to_thread(remote.queue.root_registered)
    return report


async def register_lock_root(remote: Remote, workspace: Workspace) -> str:
    """The root naming every key the lock records (and its contact sheet), which `remote gc`
    keeps: written by `push`, and by an apply that uploaded renders, so a team that only ever
    applies does not see its renders swept once past the grace period."""
    path, body, _ = _lock_root(workspace)
    await ensure_format(remote.store)
    await remote.store.create(path, body)  # None: the same root is there already
    return path


def lock_root_path(workspace: Workspace) -> str | None:
    """Where the root of the lock as it stands lives on the remote (None: it records no render):
    `remote verify` looks whether it is there."""
    path, _, keys = _lock_root(workspace)
    return path if keys else None


def _lock_root(workspace: Workspace) -> tuple[str, bytes, list[str]]:
    """The lock's root: its path and body (named by the digest of what it says), and its keys."""
    from sparkspec.review.sheetid import sheet_digest

    keys = sorted({record.key for _, _, record in _takes(workspace)})
    slug = project_slug(workspace.project.name)
    named: dict[str, object] = {"format": ROOT_FORMAT, "project": slug, "keys": keys}
    sheet = sheet_digest(workspace.project, workspace.lock)
    if sheet is not None:
        named["sheet"] = sheet
    body = json.dumps(named, sort_keys=True, separators=(",", ":")).encode()
    return root_path(slug, hashlib.sha256(body).hexdigest()), body, keys


async def _repair(remote: Remote, workspace: Workspace, listed: dict[str, int], report: PushReport) -> None:
    """Entries already on the remote (`listed`: their sizes) whose blobs are gone, cut short
    (listed at another size), or were found damaged here (`remote verify --deep`, a pull), and
    entries of another size than this machine's render's (a teammate's render of the key, or a
    damaged entry): `Remote.mend` each. One listing per blob shard finds them; only those are read."""
    from sparkspec.remote.entries import encode_entry

    keys = list(listed)
    cache = workspace.cache
    local = {k: r for k, r in zip(keys, await gather_bounded(
        [asyncio.to_thread(cache.lookup, k) for k in keys])) if r is not None}
    if not local:
        return
    bad = await asyncio.to_thread(remote.bad_keys)
    sizes = {sha: size for r in local.values() for sha, size in
             ((r.video_sha256, r.video_bytes), (r.last_frame_sha256, r.last_frame_bytes))}
    blobs = await present_blobs(remote.store, list(sizes))
    intact = {sha for sha, size in sizes.items() if sha in blobs and blobs[sha].size == size}

    async def mend(key: str) -> None:
        try:
            outcome, detail = await remote.mend(local[key], cache)
        except RemoteError as exc:
            report.failed[key] = str(exc)
            await asyncio.to_thread(remote.queue.add, key)  # the next apply or push mends it
            return
        if outcome == "repaired":
            report.repaired[key] = int(detail)
        elif outcome == "other" and detail:
            report.shared[key] = int(detail)
        elif outcome == "broken":
            report.broken[key] = str(detail)

    key = remote.settings.signing_key
    await gather_bounded([mend(k) for k, r in local.items()
                          if k in bad or not {r.video_sha256, r.last_frame_sha256} <= intact
                          or listed[k] != len(encode_entry(r, key))], TRANSFERS)


async def pull_lock(remote: Remote | None, workspace: Workspace) -> PullReport:
    report = PullReport()
    cache, memo, root = workspace.cache, workspace.memo, workspace.project.root
    by_key: dict[str, list[tuple[str, SceneRecord, tuple[Path, Path]]]] = {}  # scenes not in place
    for sid, scene_id, record in _takes(workspace):
        files = _wanted_files(workspace, scene_id, record)
        if files is None:
            report.problems[f"scene {sid}"] = ("the spec no longer gives it the paths the lock names; "
                                               "`sparkspec apply` settles it")
            continue
        if _intact(workspace, record, files):
            report.in_place += 1
            continue
        by_key.setdefault(record.key, []).append((sid, record, files))
    if remote is not None and by_key:
        await check_format(remote.store)
    from sparkspec.apply.outputs import materialize

    pulled_renders: list[CachedRender] = []  # indexed together, once what they name is flushed

    async def settle(scenes: list[tuple[str, SceneRecord, tuple[Path, Path]]]) -> None:
        """One key: into the cache if it is not there (by the lock's digests, two requests,
        checked against the lock: no entry read), then into renders/ for each of its scenes,
        while other keys are still downloading."""
        sid, record, _ = scenes[0]
        wanted = (record.video, record.last_frame)
        pulled = False
        if not all(cache.has_blob(f.sha256, f.bytes) for f in wanted):
            if remote is None:
                report.problems[f"scene {sid}"] = ("not in the local cache (no remote in use); "
                                                   "`sparkspec plan` shows what rendering it again costs")
                return
            try:
                got = await remote.pull(render_of(record), cache, workspace.state_dir / "tmp", record=False)
            except (BlobProblem, RemoteError) as exc:
                report.problems[f"scene {sid}"] = str(exc)
                return
            if (got.video_sha256, got.last_frame_sha256) != (record.video.sha256, record.last_frame.sha256):
                report.problems[f"scene {sid}"] = ("the team's remote has another render of its key than the lock "
                                                   "names; `sparkspec apply` installs that one, at no cost")
                return
            pulled_renders.append(got)
            pulled = True
        for scene, scene_record, files in scenes:
            for path, file in zip(files, (scene_record.video, scene_record.last_frame)):
                if memo.sha256(path) != file.sha256:
                    await asyncio.to_thread(materialize, cache.blob_path(file.sha256), path, file.sha256, file.bytes,
                                            shared=cache.fresh_pull(file.sha256, file.bytes))
                    memo.remember(path, file.sha256)
            if pulled:
                report.pulled[scene] = record.video.bytes + record.last_frame.bytes
                pulled = False  # the other scenes of this key came from the cache
            else:
                report.restored.append(scene)

    await gather_bounded([settle(scenes) for scenes in by_key.values()], TRANSFERS)
    # No flush: `pull` writes no lock, and the index may name a pulled blob the disk has not
    # got yet (after a power cut it fails the cache's own check and is pulled again).
    if pulled_renders:
        await asyncio.to_thread(cache.record_many, pulled_renders)
    report.restored.sort()

    for name, sequence in sorted(workspace.lock.sequences.items()):
        if memo.sha256_under(root, sequence.video.path) != sequence.video.sha256:
            report.sequences.append(name)
    return report
