"""One render's life: submit it (or collect it from the journal), wait for it, deliver it.

A task's id is in the journal before it is polled, so an apply killed at any point
collects it next time instead of paying for it twice. A render slot is held only while
the task renders remotely; downloads and checks happen after it is freed. 003021099
(the service is busy) is submitted again with backoff, a task the provider no longer
knows is submitted again, a refused key stops all new submissions. Failures come out
as `SceneFailed`, and with --fail-fast they stop new submissions too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkspec import apifacts
from sparkspec.state.journal import Journal
from sparkspec.media.probe import check_png
from sparkspec.state.cache import Cache, CachedRender
from sparkspec.errors import (
    AuthError,
    DownloadError,
    MediaError,
    ProviderError,
    RenderFailed,
    TaskNotFound,
)
from sparkspec.keys import SceneKey
from sparkspec.media.probe import probe_video
from sparkspec.providers.base import Provider, RenderRequest, TaskState, TaskStatus
from sparkspec.config.model import PollConfig

Emit = Callable[[dict[str, Any]], None]
Sleep = Callable[[float], Awaitable[None]]

UNAVAILABLE = "003021099"
MAX_RESUBMITS = 2  # of a task that failed with 003021099, per apply
MAX_DOWNLOAD_ATTEMPTS = 4  # of a finished task's outputs: lapsed URLs refreshed, damaged bodies fetched again
DEFAULT_EXPIRY = 172800


# Control flow between a render and the walk, not errors for the user: the engine catches
# them per scene, records the message in the result and goes on with the other scenes.
class SceneFailed(Exception):
    pass


class SceneSkipped(Exception):
    pass


@dataclass
class TaskRunner:
    """Runs renders for one apply: at most `parallelism` of them rendering remotely at once."""

    provider: Provider | None  # None: the plan renders nothing
    journal: Journal
    cache: Cache
    emit: Emit
    sleep: Sleep
    rng: random.Random
    wall_clock: Callable[[], float]
    monotonic: Callable[[], float]
    poll: PollConfig
    tmp_dir: Path
    parallelism: int
    fail_fast: bool = False

    def __post_init__(self) -> None:
        # Why new submissions stopped (Ctrl-C, a refused key, --fail-fast); None while they go on.
        # The engine reads and sets this same attribute: one flag for the walk and the renders.
        self.stop_submitting: str | None = None
        self.semaphore = asyncio.Semaphore(self.parallelism)  # tasks rendering remotely
        # One render per key per apply: scenes with the same key wait for the first one's.
        self.flights: dict[str, asyncio.Future[CachedRender | str]] = {}

    @property
    def api(self) -> Provider:
        if self.provider is None:
            raise AssertionError("a render was asked of an apply whose plan renders nothing")
        return self.provider

    async def obtain(self, key: SceneKey, request: RenderRequest, *, fresh: bool = False) -> tuple[CachedRender, bool]:
        """The render for `key`, and whether it came from another scene's render or the cache
        (True) rather than a task of this scene's own. A key already rendered, or rendering,
        in this apply is never paid for again; `fresh` (--replace) skips the cache."""
        flight = self.flights.get(key.hex)
        if flight is None and not fresh:
            cached = await asyncio.to_thread(self.cache.lookup, key.hex)
            if cached is not None:
                return cached, True
            flight = self.flights.get(key.hex)
        if flight is not None:
            outcome = await asyncio.shield(flight)
            if isinstance(outcome, str):
                raise SceneSkipped(outcome)
            return outcome, True
        flight = self.flights[key.hex] = asyncio.get_running_loop().create_future()
        try:
            cached = await self.render(key, request, fresh=fresh)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, asyncio.CancelledError) else str(exc)
            flight.set_result(f"the render it shares with {request.scene} did not finish: {reason}")
            raise
        flight.set_result(cached)
        return cached, False

    async def render(self, key: SceneKey, request: RenderRequest, *, fresh: bool = False) -> CachedRender:
        """Submit (or collect) and wait while holding a render slot; download and check after
        releasing it, so the slot bounds only the tasks rendering remotely."""
        provider_type = self.api.type
        resubmits = 0
        if fresh:  # --replace: whatever an earlier apply submitted is not collected
            await asyncio.to_thread(self.journal.forget, key.hex)
        while True:
            try:
                async with self.semaphore:
                    if self.stop_submitting is not None and self.journal.get(key.hex) is None:
                        raise SceneSkipped(self.stop_submitting)
                    status = await self.collect_or_submit(request)
                    status = await self.wait(request.scene, status)
                if status.state is TaskState.COMPLETED:
                    return await self.deliver(request, key, status)
                error = None
                if status.error_code != UNAVAILABLE or resubmits == MAX_RESUBMITS:
                    message = status.error_message or "the render failed"
                    code = f" ({status.error_code})" if status.error_code else ""
                    error = self.failure(request.scene,
                                         f"{provider_type} task {status.task_id} failed{code}: {message}")
                await asyncio.to_thread(self.journal.forget, key.hex)
                if error is not None:
                    raise error
                resubmits += 1
                await self.sleep(self.backoff(resubmits))
            except TaskNotFound:
                await asyncio.to_thread(self.journal.forget, key.hex)
            except AuthError as exc:
                self.stop_submitting = f"the API refused the key: {exc}"
                raise self.failure(request.scene, str(exc)) from None
            except RenderFailed as exc:
                error = self.failure(request.scene, str(exc))
                await asyncio.to_thread(self.journal.forget, key.hex)
                raise error from None
            except ProviderError as exc:
                # The task id stays in the journal: a later apply can still collect it.
                raise self.failure(request.scene, str(exc)) from None

    def failure(self, scene_id: str, message: str) -> SceneFailed:
        """The error that fails a scene. With --fail-fast, submissions stop here, before any
        other scene can take the render slot this one just freed."""
        if self.fail_fast and self.stop_submitting is None:
            self.stop_submitting = f"--fail-fast: {scene_id} failed"
        return SceneFailed(message)

    async def collect_or_submit(self, request: RenderRequest) -> TaskStatus:
        entry = self.journal.get(request.key)
        if entry is not None and entry.provider == self.api.type:
            if self.wall_clock() < entry.submitted_at + entry.expires_after:
                self.emit({"event": "progress", "scene": request.scene, "task_id": entry.task_id,
                           "state": "collecting"})
                return TaskStatus(entry.task_id, TaskState.RUNNING, locator=entry.locator)
            await asyncio.to_thread(self.journal.forget, request.key)
        return await self.submit(request)

    async def submit(self, request: RenderRequest) -> TaskStatus:
        try:
            status = await self.api.submit(request)
        except AuthError as exc:
            self.stop_submitting = f"the API refused the key: {exc}"
            raise self.failure(request.scene, str(exc)) from None
        except ProviderError as exc:
            raise self.failure(request.scene, str(exc)) from None
        await asyncio.to_thread(self.journal.record, request.key, request.scene, self.api.type,
                                status.task_id, request.execution_expires_after or DEFAULT_EXPIRY,
                                self.wall_clock(), status.locator)
        self.emit({"event": "submitted", "scene": request.scene, "task_id": status.task_id})
        return status

    def backoff(self, attempt: int) -> float:
        base = min(self.poll.max, self.poll.initial * (2 ** (attempt - 1)))
        return float(base * (0.5 + self.rng.random() / 2))

    def next_poll(self, attempt: int, status: TaskStatus, elapsed: float) -> float:
        """When to look again. With a reported progress p after `elapsed` seconds, the task
        should be done in elapsed*(1-p)/p: poll then, but never wait longer than the time
        already spent (an early, small p extrapolates badly) nor than poll.max. Without
        progress, back off exponentially with jitter. Never sooner than poll.initial/4."""
        p = status.progress
        if p is None or not 0 < p < 1 or elapsed <= 0:
            return self.backoff(attempt)
        remaining = elapsed * (1 - p) / p
        return max(self.poll.initial / 4, min(self.poll.max, elapsed, remaining + 0.005))

    async def wait(self, scene_id: str, status: TaskStatus) -> TaskStatus:
        attempt = 0
        started = self.monotonic()
        while status.state is TaskState.RUNNING:
            attempt += 1
            await self.sleep(self.next_poll(attempt, status, self.monotonic() - started))
            status = await self.api.poll(status.task_id, status.locator)
            if status.state is TaskState.RUNNING:
                self.emit({"event": "progress", "scene": scene_id, "task_id": status.task_id,
                           "progress": status.progress})
        return status

    async def deliver(self, request: RenderRequest, key: SceneKey, status: TaskStatus) -> CachedRender:
        """Download, check and cache both outputs; then the journal entry can go."""
        cache = self.cache
        parts = (self.tmp_dir / f"{key.hex}.mp4.part", self.tmp_dir / f"{key.hex}.png.part")
        for attempt in range(1, MAX_DOWNLOAD_ATTEMPTS + 1):
            if not status.video_url or not status.last_frame_url:
                raise self.failure(request.scene, f"task {status.task_id} completed without "
                                   f"{'a video' if not status.video_url else 'a last frame'}")
            try:
                video = await self.api.download(status.video_url, parts[0])
                frame = await self.api.download(status.last_frame_url, parts[1])
                info = await asyncio.to_thread(probe_video, video.path)
                await asyncio.to_thread(check_png, frame.path)
                break
            except (DownloadError, MediaError) as exc:
                for part in parts:
                    part.unlink(missing_ok=True)
                expired = isinstance(exc, DownloadError) and exc.code == "url_expired"
                damaged = isinstance(exc, MediaError) or getattr(exc, "code", None) == "bad_content"
                if not (expired or damaged) or attempt == MAX_DOWNLOAD_ATTEMPTS:
                    # The task id stays in the journal: a later apply can download it again.
                    raise self.failure(request.scene,
                                       f"download of task {status.task_id} failed: {exc}") from None
                if expired:  # signed URLs lapse: the task gives fresh ones
                    status = await self.api.poll(status.task_id, status.locator)
        await asyncio.to_thread(cache.put_blob, video.path, video.sha256)
        await asyncio.to_thread(cache.put_blob, frame.path, frame.sha256)
        # Unreported usage: the formula on what was actually rendered (an adaptive ratio's
        # size is only known from the output).
        tokens = status.tokens if status.tokens is not None else \
            apifacts.estimate_tokens(info.width, info.height, info.frames)
        inputs = dict(key.inputs)
        cached = CachedRender(
            key=key.hex, provider=self.api.type, model=request.model,
            task_id=status.task_id, seed=status.seed if status.seed is not None else key.seed,
            tokens=tokens, video_sha256=video.sha256, video_bytes=video.size,
            last_frame_sha256=frame.sha256, last_frame_bytes=frame.size, inputs=inputs,
            seed_derived=key.seed_derived, cost=status.cost)
        await asyncio.to_thread(cache.record, cached)
        await asyncio.to_thread(self.journal.forget, key.hex)
        return cached
