"""The apply engine: carries out a plan with a provider, upstream scenes first.

A scene starts when its upstream is done; at most `parallelism` renders are in
flight. A chained scene's key is computed only when its upstream's real last
frame exists. A failed render skips its dependents while the rest go on. Every
finished scene is in the cache, in renders/ and in the lock before the next
lock write; a task's id is in the journal before it is polled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkspec import apifacts
from sparkspec.apply.journal import Journal
from sparkspec.apply.outputs import check_png, materialize, remove_output, write_index
from sparkspec.cache import CachedRender
from sparkspec.errors import (
    AuthError,
    DownloadError,
    MediaError,
    ProviderError,
    RenderFailed,
    TaskNotFound,
)
from sparkspec.keys import SceneKey, first_frame_input, scene_key
from sparkspec.lockfile import FileRecord, Lock, SceneRecord, SequenceRecord, write_lock
from sparkspec.plan import Action, Change, Plan, image_identity, output_paths, sequence_path
from sparkspec.providers.base import FirstFrame, Provider, RenderRequest, TaskState, TaskStatus
from sparkspec.spec.model import Scene
from sparkspec.workspace import Workspace

Emit = Callable[[dict[str, Any]], None]
Sleep = Callable[[float], Awaitable[None]]

UNAVAILABLE = "003021099"
MAX_RESUBMITS = 2  # of a task that failed with 003021099, per apply
MAX_DOWNLOAD_ATTEMPTS = 4  # of a finished task's outputs: lapsed URLs refreshed, damaged bodies fetched again
DEFAULT_EXPIRY = 172800


@dataclass
class ApplyResult:
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # scene -> message
    skipped: dict[str, str] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    stitched: list[str] = field(default_factory=list)
    tokens: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


class _SceneFailed(Exception):
    pass


class _Skipped(Exception):
    pass


@dataclass
class Engine:
    workspace: Workspace
    plan: Plan
    provider: Provider
    emit: Emit
    parallelism: int
    fail_fast: bool = False
    sleep: Sleep = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)
    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        ws = self.workspace
        self.project = ws.project
        self.journal = Journal(ws.state_dir / "journal")
        self.tmp_dir = ws.state_dir / "tmp"
        self.scenes: dict[str, SceneRecord] = dict(ws.lock.scenes)
        self.sequences: dict[str, SequenceRecord] = dict(ws.lock.sequences)
        self.result = ApplyResult()
        self.done: dict[str, asyncio.Future[SceneRecord | None]] = {}
        self.stop_submitting: str | None = None
        self.semaphore = asyncio.Semaphore(self.parallelism)  # tasks rendering remotely
        self.installing = asyncio.Lock()  # lock writes happen one at a time, in order

    # -- the lock ----------------------------------------------------------------------
    def save_lock(self) -> None:
        lock = Lock(dict(sorted(self.scenes.items())), dict(sorted(self.sequences.items())))
        text = lock.to_text()
        if text != self.workspace.lock_text:
            write_lock(self.workspace.lock_path, lock)
            self.workspace.lock_text = text
            self.workspace.lock = lock

    # -- the walk -------------------------------------------------------------------------
    async def run(self) -> ApplyResult:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        scene_changes = [c for c in self.plan.changes if c.kind == "scene" and c.action is not Action.DELETE]
        for change in scene_changes:
            self.done[change.id] = loop.create_future()
        for change in self.plan.changes:
            if change.kind == "scene" and change.action is Action.DELETE:
                self.delete_scene(change.id)
        tasks = [asyncio.create_task(self.scene_task(c), name=c.id) for c in scene_changes]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        for change in self.plan.changes:
            if change.kind == "sequence":
                if change.action is Action.DELETE:
                    self.delete_sequence(change.id)
                else:
                    self.sequence(change)
        if self.scenes or self.sequences:
            write_index(self.project.root / self.project.output_dir, self.project.name,
                        {sid: (r.video.path, r.last_frame.path) for sid, r in self.scenes.items()},
                        {name: r.video.path for name, r in self.sequences.items()})
        self.emit({"event": "done", "ok": self.result.ok, "completed": len(self.result.completed),
                   "failed": len(self.result.failed), "skipped": len(self.result.skipped),
                   "reused": len(self.result.reused), "restored": len(self.result.restored),
                   "deleted": len(self.result.deleted), "stitched": len(self.result.stitched),
                   "tokens": self.result.tokens})
        return self.result

    async def scene_task(self, change: Change) -> None:
        future = self.done[change.id]
        try:
            record = await self.scene(change)
        except asyncio.CancelledError:
            if not future.done():
                future.set_result(None)
            raise
        except _Skipped as exc:
            self.result.skipped[change.id] = str(exc)
            self.emit({"event": "skipped", "scene": change.id, "reason": str(exc)})
            record = None
        except _SceneFailed as exc:
            self.result.failed[change.id] = str(exc)
            self.emit({"event": "failed", "scene": change.id, "error": str(exc)})
            record = None
        if not future.done():
            future.set_result(record)

    async def scene(self, change: Change) -> SceneRecord | None:
        scene = self.project.scenes[change.id]
        first: dict[str, str] | None
        upstream_frame: Path | None = None
        if scene.upstream is not None:
            upstream = await self.done[scene.upstream] if scene.upstream in self.done else \
                self.scenes.get(scene.upstream)
            if upstream is None:
                raise _Skipped(f"upstream {scene.upstream} did not render")
            first = first_frame_input(sha256=upstream.last_frame.sha256)
            upstream_frame = self.workspace.cache.blob_path(upstream.last_frame.sha256)
            if not upstream_frame.exists():
                upstream_frame = self.project.root / upstream.last_frame.path
        else:
            first = image_identity(scene, self.workspace.memo)
        key = scene_key(self.project, scene, first)
        record = self.scenes.get(scene.id)
        if change.action is Action.NOOP or (
                record is not None and record.key == key.hex and change.action is not Action.REPLACE
                and self.outputs_intact(scene.id, record)):
            return record
        cached = self.workspace.cache.lookup(key.hex)
        if cached is not None and change.action is not Action.REPLACE:
            verb = "restored" if record is not None and record.key == key.hex else "reused"
            record = await self.install(scene, cached)
            getattr(self.result, verb).append(scene.id)
            self.emit({"event": verb, "scene": scene.id, "key": key.hex})
            return record
        if self.stop_submitting is not None:
            raise _Skipped(self.stop_submitting)
        cached = await self.render(scene, key, upstream_frame)
        record = await self.install(scene, cached)
        self.result.completed.append(scene.id)
        self.result.tokens += cached.tokens
        self.emit({"event": "completed", "scene": scene.id, "key": key.hex, "task_id": cached.task_id,
                   "tokens": cached.tokens})
        return record

    def outputs_intact(self, scene_id: str, record: SceneRecord) -> bool:
        video, frame = output_paths(self.project, scene_id)
        memo = self.workspace.memo
        return (record.video.path == video and record.last_frame.path == frame
                and memo.sha256(self.project.root / video) == record.video.sha256
                and memo.sha256(self.project.root / frame) == record.last_frame.sha256)

    async def install(self, scene: Scene, cached: CachedRender) -> SceneRecord:
        """Cache -> renders/ -> lock, in that order, off the event loop and one at a time."""
        async with self.installing:
            return await asyncio.to_thread(self._install, scene, cached)

    def _install(self, scene: Scene, cached: CachedRender) -> SceneRecord:
        cache, memo = self.workspace.cache, self.workspace.memo
        video, frame = output_paths(self.project, scene.id)
        for rel, sha in ((video, cached.video_sha256), (frame, cached.last_frame_sha256)):
            dest = self.project.root / rel
            if memo.sha256(dest) != sha:
                materialize(cache.blob_path(sha), dest)
                memo.remember(dest, sha)
        record = SceneRecord(
            key=cached.key, provider=cached.provider, model=cached.model, task_id=cached.task_id,
            seed=cached.seed, tokens=cached.tokens,
            video=FileRecord(video, cached.video_sha256, cached.video_bytes),
            last_frame=FileRecord(frame, cached.last_frame_sha256, cached.last_frame_bytes),
            inputs=cached.inputs, seed_derived=cached.seed_derived, cost=cached.cost)
        self.scenes[scene.id] = record
        self.save_lock()
        return record

    # -- rendering --------------------------------------------------------------------------
    def request(self, scene: Scene, key: SceneKey, upstream_frame: Path | None) -> RenderRequest:
        first: FirstFrame | None = None
        if upstream_frame is not None:
            first = FirstFrame(path=upstream_frame)
        elif scene.image is not None:
            first = FirstFrame(path=scene.image.path, url=scene.image.url)
        return RenderRequest(
            key=key.hex, scene=scene.id, model=self.project.provider.model, prompt=scene.prompt,
            resolution=scene.resolution, ratio=scene.ratio, duration=scene.duration, frames=scene.frames,
            seed=key.seed, camera_fixed=scene.camera_fixed, watermark=scene.watermark, first_frame=first,
            service_tier=scene.service_tier, execution_expires_after=scene.execution_expires_after,
            callback_url=scene.callback_url)

    async def render(self, scene: Scene, key: SceneKey, upstream_frame: Path | None) -> CachedRender:
        """Submit (or collect) and wait while holding a render slot; download and check after
        releasing it, so the slot bounds only the tasks rendering remotely."""
        request = self.request(scene, key, upstream_frame)
        provider_type = self.provider.type
        resubmits = 0
        while True:
            try:
                async with self.semaphore:
                    if self.stop_submitting is not None and self.journal.get(key.hex) is None:
                        raise _Skipped(self.stop_submitting)
                    status = await self.collect_or_submit(request)
                    status = await self.wait(scene.id, status)
                if status.state is TaskState.COMPLETED:
                    return await self.deliver(scene, key, status)
                error = None
                if status.error_code != UNAVAILABLE or resubmits == MAX_RESUBMITS:
                    message = status.error_message or "the render failed"
                    code = f" ({status.error_code})" if status.error_code else ""
                    error = self.failure(scene.id, f"{provider_type} task {status.task_id} failed{code}: "
                                                   f"{message}")
                await asyncio.to_thread(self.journal.forget, key.hex)
                if error is not None:
                    raise error
                resubmits += 1
                await self.sleep(self.backoff(resubmits))
            except TaskNotFound:
                await asyncio.to_thread(self.journal.forget, key.hex)
            except AuthError as exc:
                self.stop_submitting = f"the API refused the key: {exc}"
                raise self.failure(scene.id, str(exc)) from None
            except RenderFailed as exc:
                error = self.failure(scene.id, str(exc))
                await asyncio.to_thread(self.journal.forget, key.hex)
                raise error from None
            except ProviderError as exc:
                # The task id stays in the journal: a later apply can still collect it.
                raise self.failure(scene.id, str(exc)) from None

    def failure(self, scene_id: str, message: str) -> _SceneFailed:
        """The error that fails a scene. With --fail-fast, submissions stop here, before any
        other scene can take the render slot this one just freed."""
        if self.fail_fast and self.stop_submitting is None:
            self.stop_submitting = f"--fail-fast: {scene_id} failed"
        return _SceneFailed(message)

    async def collect_or_submit(self, request: RenderRequest) -> TaskStatus:
        entry = self.journal.get(request.key)
        if entry is not None and entry.provider == self.provider.type:
            if self.wall_clock() < entry.submitted_at + entry.expires_after:
                self.emit({"event": "progress", "scene": request.scene, "task_id": entry.task_id,
                           "state": "collecting"})
                return TaskStatus(entry.task_id, TaskState.RUNNING)
            await asyncio.to_thread(self.journal.forget, request.key)
        return await self.submit(request)

    async def submit(self, request: RenderRequest) -> TaskStatus:
        try:
            status = await self.provider.submit(request)
        except AuthError as exc:
            self.stop_submitting = f"the API refused the key: {exc}"
            raise self.failure(request.scene, str(exc)) from None
        except ProviderError as exc:
            raise self.failure(request.scene, str(exc)) from None
        await asyncio.to_thread(self.journal.record, request.key, request.scene, self.provider.type,
                                status.task_id, request.execution_expires_after or DEFAULT_EXPIRY,
                                self.wall_clock())
        self.emit({"event": "submitted", "scene": request.scene, "task_id": status.task_id})
        return status

    def backoff(self, attempt: int) -> float:
        poll = self.project.provider.poll
        base = min(poll.max, poll.initial * (2 ** (attempt - 1)))
        return float(base * (0.5 + self.rng.random() / 2))

    def next_poll(self, attempt: int, status: TaskStatus, elapsed: float) -> float:
        """When to look again. With a reported progress p after `elapsed` seconds, the task
        should be done in elapsed*(1-p)/p: poll then, but never wait longer than the time
        already spent (an early, small p extrapolates badly) nor than poll.max. Without
        progress, back off exponentially with jitter. Never sooner than poll.initial/4."""
        poll = self.project.provider.poll
        p = status.progress
        if p is None or not 0 < p < 1 or elapsed <= 0:
            return self.backoff(attempt)
        remaining = elapsed * (1 - p) / p
        return max(poll.initial / 4, min(poll.max, elapsed, remaining + 0.005))

    async def wait(self, scene_id: str, status: TaskStatus) -> TaskStatus:
        attempt = 0
        started = self.monotonic()
        while status.state is TaskState.RUNNING:
            attempt += 1
            await self.sleep(self.next_poll(attempt, status, self.monotonic() - started))
            status = await self.provider.poll(status.task_id)
            if status.state is TaskState.RUNNING:
                self.emit({"event": "progress", "scene": scene_id, "task_id": status.task_id,
                           "progress": status.progress})
        return status

    async def deliver(self, scene: Scene, key: SceneKey, status: TaskStatus) -> CachedRender:
        """Download, check and cache both outputs; then the journal entry can go."""
        cache = self.workspace.cache
        parts = (self.tmp_dir / f"{key.hex}.mp4.part", self.tmp_dir / f"{key.hex}.png.part")
        for attempt in range(1, MAX_DOWNLOAD_ATTEMPTS + 1):
            if not status.video_url or not status.last_frame_url:
                raise self.failure(scene.id, f"task {status.task_id} completed without "
                                   f"{'a video' if not status.video_url else 'a last frame'}")
            try:
                video = await self.provider.download(status.video_url, parts[0])
                frame = await self.provider.download(status.last_frame_url, parts[1])
                await asyncio.to_thread(_check_video, video.path)
                await asyncio.to_thread(check_png, frame.path)
                break
            except (DownloadError, MediaError) as exc:
                for part in parts:
                    part.unlink(missing_ok=True)
                expired = isinstance(exc, DownloadError) and exc.code == "url_expired"
                damaged = isinstance(exc, MediaError) or getattr(exc, "code", None) == "bad_content"
                if not (expired or damaged) or attempt == MAX_DOWNLOAD_ATTEMPTS:
                    # The task id stays in the journal: a later apply can download it again.
                    raise self.failure(scene.id, f"download of task {status.task_id} failed: {exc}") from None
                if expired:  # signed URLs lapse: the task gives fresh ones
                    status = await self.provider.poll(status.task_id)
        await asyncio.to_thread(cache.put_blob, video.path, video.sha256)
        await asyncio.to_thread(cache.put_blob, frame.path, frame.sha256)
        tokens = status.tokens if status.tokens is not None else self.estimate(scene)
        inputs = dict(key.inputs)
        cached = CachedRender(
            key=key.hex, provider=self.provider.type, model=self.project.provider.model,
            task_id=status.task_id, seed=status.seed if status.seed is not None else key.seed,
            tokens=tokens, video_sha256=video.sha256, video_bytes=video.size,
            last_frame_sha256=frame.sha256, last_frame_bytes=frame.size, inputs=inputs,
            seed_derived=key.seed_derived, cost=status.cost)
        await asyncio.to_thread(cache.record, cached)
        await asyncio.to_thread(self.journal.forget, key.hex)
        return cached

    def estimate(self, scene: Scene) -> int:
        ratio = scene.ratio if scene.ratio != "adaptive" else "16:9"
        width, height = apifacts.pixel_size(scene.resolution, ratio)
        return apifacts.estimate_tokens(width, height, apifacts.frame_count(scene.duration, scene.frames))

    # -- deletes and sequences ------------------------------------------------------------
    def delete_scene(self, scene_id: str) -> None:
        record = self.scenes.pop(scene_id, None)
        if record is not None:
            for file in (record.video, record.last_frame):
                remove_output(self.project.root / file.path)
        self.save_lock()
        self.result.deleted.append(scene_id)
        self.emit({"event": "deleted", "scene": scene_id})

    def delete_sequence(self, name: str) -> None:
        record = self.sequences.pop(name, None)
        if record is not None:
            remove_output(self.project.root / record.video.path)
        self.save_lock()
        self.result.deleted.append(name)
        self.emit({"event": "deleted", "sequence": name})

    def sequence(self, change: Change) -> None:
        members = self.project.sequences[change.id].scenes
        records = [self.scenes.get(m) for m in members]
        missing = [m for m, r in zip(members, records) if r is None or m in self.result.failed
                   or m in self.result.skipped]
        if missing:
            reason = f"member {missing[0]} did not render"
            self.result.skipped[f"sequence {change.id}"] = reason
            self.emit({"event": "skipped", "sequence": change.id, "reason": reason})
            return
        digests = tuple(r.video.sha256 for r in records if r is not None)
        rel = sequence_path(self.project, change.id)
        dest = self.project.root / rel
        old = self.sequences.get(change.id)
        memo = self.workspace.memo
        if old is not None and old.members == digests and old.video.path == rel \
                and memo.sha256(dest) == old.video.sha256:
            return
        from sparkspec.media.stitch import stitch

        stitch([self.project.root / r.video.path for r in records if r is not None], dest)
        digest = memo.sha256(dest)
        assert digest is not None
        self.sequences[change.id] = SequenceRecord(digests, FileRecord(rel, digest, dest.stat().st_size))
        self.save_lock()
        self.result.stitched.append(change.id)
        self.emit({"event": "stitched", "sequence": change.id})


def _check_video(path: Path) -> None:
    from sparkspec.media.probe import probe_video

    probe_video(path)


def running_remotely(state_dir: Path) -> list[str]:
    """Journal entries: tasks submitted and not yet collected."""
    return [f"{e.scene} (task {e.task_id})" for e in Journal(state_dir / "journal").entries()]

