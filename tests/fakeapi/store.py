"""The one task store behind every dialect of the fake: tasks, their life, renders, faults, counters.

A task waits in the queue for `queue_time` seconds, then renders for `latency` seconds,
then completes (or ends as an injected `outcome` says). Its bytes come from the render
mode: "placeholder" serves deterministic bytes that are no video (for tests of a provider
alone); "local" renders every task with sparkspec's local renderer (the real thing: H.264
at the API's pixel size, from the first frame); "template" renders once per output shape
and serves those bytes for every task of that shape (for benchmarks that measure
orchestration, not the fake's CPU). `video_padding` appends an ISO BMFF `free` box of that
many bytes to every served video: a valid mp4 of the size wanted, streamed from zeros,
never held in memory. `unique` makes every task's files its own, as real renders are: the
video ends in a `free` box holding the task id and the last frame carries it in a `tEXt`
chunk (the pictures are the template's; only the bytes, and so the sha256, differ).

A render's key is the sha256 of the canonical JSON of the generation parameters (the
same in every dialect), so the same scene submitted twice counts twice under one key
(`creates_by_key`); `prompt_of_key` maps a key back to its prompt for readable assertions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "spark_dance_v1_0_pro_fast"
ARK_MODEL = "seedance-1-0-pro-fast-251015"  # BytePlus ModelArk's id of the same model
Latency = float | tuple[float, float] | Callable[[str, dict[str, Any]], float]
Rendered = tuple[Path, Path, int, int, int]  # video, last frame, width, height, frames


@dataclass
class Fault:
    """One injected fault: `kind` on `endpoint` ("create", "query", "result", "cancel", "list",
    "video", "image", "download")."""

    endpoint: str
    kind: str  # reset | slow | late (create: answered after `delay`) | status | truncate | garbage | short_length | stall (downloads)
    times: int = 1
    status: int = 500
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    create_task: bool = False  # reset/slow on create: the task is made before the fault
    skip: int = 0  # let this many requests of the endpoint through before the fault starts


@dataclass
class Outcome:
    kind: str  # failed | expired | cancelled | completed_with_error
    code: str | None = None
    message: str | None = None
    error_as_string: bool = False
    times: int = 1
    match: Callable[[dict[str, Any]], bool] | None = None  # only tasks whose params match (None: any)


@dataclass
class Task:
    id: str
    key: str
    params: dict[str, Any]
    model: str
    created_at: float  # wall clock, reported
    ready_at: float  # monotonic: when it has rendered
    latency: float  # seconds of rendering
    outcome: Outcome | None = None
    render: Future[Rendered] | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    queries: int = 0
    downloads: int = 0
    created_mono: float = field(default_factory=time.monotonic)
    start_at: float = 0.0  # monotonic: when it leaves the queue (0: at once)
    dialect: str = "generation"  # the adapter that made it: generation | queue | ark
    cancelled: bool = False

    def phase(self, now: float | None = None) -> str:
        """queued | running | completed | failed | expired | cancelled | completed_with_error."""
        now = time.monotonic() if now is None else now
        if self.cancelled:
            return "cancelled"
        if now < self.start_at:
            return "queued"
        if now < self.ready_at or (self.outcome is None and not (self.render is not None and self.render.done())):
            return "running"
        return "completed" if self.outcome is None else self.outcome.kind

    def progress(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        if self.latency <= 0:
            return 0.99
        return round(max(0.0, min(0.99, (now - (self.ready_at - self.latency)) / self.latency)), 3)


class FakeSparkAPI:
    def __init__(self, api_key: str = "test-key", *, latency: Latency = 0.0, queue_time: Latency = 0.0,
                 seed: int = 0, render: str = "local", video_padding: int = 0, generation_shape: str = "gateway",
                 render_workers: int = 2, report_seed: bool = False, unique: bool = False, keep_bodies: bool = True,
                 report_usage: bool = True, last_frame: str = "image", usage: dict[str, Any] | None = None,
                 status_names: dict[str, str] | None = None, ark_model: str = ARK_MODEL,
                 dialect: str | None = None) -> None:
        self.api_key = api_key
        self.latency = latency
        self.queue_time = queue_time  # seconds a task waits in the queue before it renders
        self.rng = random.Random(seed)
        self.seed = seed
        self.render_mode = render
        self.video_padding = video_padding
        self.unique = unique
        # The task objects of the generation protocol: "gateway" (section 5), or "upstream"
        # (the gateway passing upstream's own task object through).
        self.generation_shape = dialect or generation_shape
        self.report_seed = report_seed
        self.report_usage = report_usage  # False: tasks finish with an empty usage, as some gateways do
        self.report_created_at = True  # False: the generation protocol's task objects carry no created_at
        # Where a finished task shows its last frame: "image" (a typed item), "untyped" (an item
        # with no type, known by its .png URL and content type), "last_frame_url" (a field on the
        # task), or "none" (nowhere: the client must extract it from the video). Upstream's
        # shape knows only `content.last_frame_url` (any mode but "none").
        self.last_frame = last_frame
        self.usage = usage  # served as the finished task's usage instead of the token count
        self.status_names = status_names or {}  # e.g. {"completed": "done", "in_progress": "rendering"}
        self.ark_model = ark_model
        self.keep_bodies = keep_bodies
        self.lock = threading.RLock()
        self.tasks: dict[str, Task] = {}
        self.forgotten: set[str] = set()
        self.unknown_tasks = False  # True: every query answers 404, as a gateway whose reads lag its writes
        self.faults: list[Fault] = []
        self.outcomes: list[Outcome] = []
        self.requests: Counter[str] = Counter()  # endpoint -> count
        self.requests_by_key: Counter[str] = Counter()
        self.creates_by_key: Counter[str] = Counter()
        self.prompt_of_key: dict[str, str] = {}
        self.create_bodies: list[dict[str, Any]] = []
        self.create_body_bytes: list[int] = []
        self.download_authorization: list[str | None] = []
        self.api_authorization: list[str | None] = []
        self.peers: list[tuple[str, int]] = []  # (path, the client's port) of every request: its connection
        self.events: list[tuple[float, str, str]] = []  # (monotonic, endpoint, task id or "")
        self._executor = ThreadPoolExecutor(max_workers=render_workers)
        self._templates: dict[tuple[str, str, int], Future[Rendered]] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="fake-spark-"))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeSparkAPI:
        from fakeapi.server import serve

        self._server, self._thread = serve(self)
        return self

    @property
    def base_url(self) -> str:
        """The gateway's base URL (generation and queue protocols)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ark_base_url(self) -> str:
        """Upstream's base URL, as `provider.base_url` of `type: ark` takes it."""
        return self.base_url + "/api/v3"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FakeSparkAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dialect(self) -> str:
        """The generation protocol's task shape (an older name of `generation_shape`)."""
        return self.generation_shape

    @dialect.setter
    def dialect(self, value: str) -> None:
        self.generation_shape = value

    # -- controls -------------------------------------------------------------------------
    def inject(self, endpoint: str, kind: str, **options: Any) -> Fault:
        fault = Fault(endpoint, kind, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def outcome(self, kind: str, **options: Any) -> Outcome:
        """The next created task(s) end this way instead of completing."""
        outcome = Outcome(kind, **options)
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def forget(self, task_id: str) -> None:
        """The API no longer knows this task: queries answer 404."""
        with self.lock:
            self.forgotten.add(task_id)

    def reset_counters(self) -> None:
        with self.lock:
            for counter in (self.requests, self.requests_by_key, self.creates_by_key):
                counter.clear()
            self.create_bodies.clear()
            self.download_authorization.clear()
            self.events.clear()

    @property
    def total_creates(self) -> int:
        return sum(self.creates_by_key.values())

    def creates_by_prompt(self) -> dict[str, int]:
        with self.lock:
            return {self.prompt_of_key[k]: n for k, n in self.creates_by_key.items()}

    def take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.endpoint == endpoint or (fault.endpoint == "download" and endpoint in ("video", "image")):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    _take_fault = take_fault

    # -- the model of a task ----------------------------------------------------------------
    def _draw(self, value: Latency, key: str, params: dict[str, Any], salt: str) -> float:
        if callable(value):
            return float(value(key, params))
        if isinstance(value, tuple):
            low, high = value
            # Seeded by the prompt: the same scene takes the same time, run after run, even
            # when its first frame's bytes change with the renderer.
            draw = random.Random(f"{self.seed}:{salt}{prompt_of(params)}").random()
            return low + (high - low) * draw
        return float(value)

    def create(self, params: dict[str, Any], model: str, dialect: str = "generation") -> Task:
        key = params_key(params)
        with self.lock:
            self._counter += 1
            task_id = f"cgt-{self._counter:05d}-{secrets.token_hex(3)}"
            latency = self._draw(self.latency, key, params, "")
            queued = self._draw(self.queue_time, key, params, "queue:")
            outcome = None
            outcome = next((o for o in self.outcomes if o.match is None or o.match(params)), None)
            if outcome is not None:
                outcome.times -= 1
                if outcome.times <= 0:
                    self.outcomes.remove(outcome)
            now = time.monotonic()
            task = Task(task_id, key, params, model, time.time(), now + queued + latency, latency, outcome,
                        created_mono=now, start_at=now + queued, dialect=dialect)
            self.tasks[task_id] = task
            self.creates_by_key[key] += 1
            self.prompt_of_key[key] = prompt_of(params)
        if outcome is None:
            task.render = self._schedule_render(task)
        return task

    def lookup(self, task_id: str) -> Task | None:
        """The task, or None when the API does not know it (never made, or forgotten)."""
        with self.lock:
            return None if task_id in self.forgotten or self.unknown_tasks else self.tasks.get(task_id)

    def cancel(self, task: Task) -> bool:
        """Cancel a task still in the queue (it costs nothing); False once it renders or ended."""
        with self.lock:
            if task.phase() != "queued":
                return False
            task.cancelled = True
        if task.render is not None and self.render_mode != "template":
            task.render.cancel()
        return True

    def result(self, task: Task) -> dict[str, Any]:
        """What a finished task reports, whatever the dialect: its URLs, size, frames and tokens."""
        assert task.render is not None
        _, _, width, height, frames = task.render.result()
        tokens = width * height * frames // 1024
        usage = {"completion_tokens": tokens, "total_tokens": tokens} if self.report_usage else {}
        return {"video_url": f"{self.base_url}/files/{task.id}/video.mp4?X-Signature={task.token}",
                "last_frame_url": f"{self.base_url}/files/{task.id}/last.png?X-Signature={task.token}"
                if self.last_frame != "none" else None,
                "width": width, "height": height, "frames": frames,
                "usage": dict(self.usage) if self.usage is not None else usage}

    def _schedule_render(self, task: Task) -> Future[Rendered]:
        if self.render_mode == "template":
            shape = (str(task.params.get("resolution", "1080p")), str(task.params.get("ratio", "16:9")),
                     frames_of(task.params))
            with self.lock:
                if shape not in self._templates:
                    self._templates[shape] = self._executor.submit(self._render, f"tpl-{len(self._templates)}",
                                                                   dict(task.params, content=[
                                                                       {"type": "text", "text": "template"}]))
                return self._templates[shape]
        return self._executor.submit(self._render, task.id, task.params)

    def _render(self, name: str, params: dict[str, Any]) -> Rendered:
        folder = self._dir / name
        folder.mkdir(parents=True, exist_ok=True)
        if self.render_mode == "placeholder":
            return _placeholder(folder, params)
        from sparkspec.providers.base import FirstFrame, RenderRequest
        from sparkspec.providers.local import render_video

        first: FirstFrame | None = None
        for item in params.get("content", []):
            if item.get("type") == "image_url":
                url = item["image_url"]["url"]
                if url.startswith("data:"):
                    header, _, data = url.partition(",")
                    image = folder / ("first." + header.split("/")[1].split(";")[0])
                    image.write_bytes(base64.b64decode(data))
                    first = FirstFrame(path=image)
                else:
                    first = FirstFrame(url=url)
        frames = params.get("frames")
        request = RenderRequest(
            key=params_key(params), scene=name, model=MODEL, prompt=prompt_of(params),
            resolution=params.get("resolution", "1080p"), ratio=params.get("ratio", "16:9"),
            duration=None if frames is not None else params.get("duration", 5), frames=frames,
            seed=int(params.get("seed", -1)) if int(params.get("seed", -1)) >= 0 else 1,
            camera_fixed=bool(params.get("camera_fixed", False)), watermark=bool(params.get("watermark", False)),
            first_frame=first)
        video, frame = folder / "video.mp4", folder / "last.png"
        width, height = render_video(request, video, frame)
        return video, frame, width, height, frames_of(params)

    def task_object(self, task: Task) -> dict[str, Any]:
        """The generation protocol's task object (kept for callers of the one-dialect fake)."""
        from fakeapi.generation import task_object

        return task_object(self, task)


def _placeholder(folder: Path, params: dict[str, Any]) -> Rendered:
    """Bytes that are not a video, for provider tests that only move bytes around."""
    seed = params_key(params)
    video, frame = folder / "video.mp4", folder / "last.png"
    video.write_bytes(b"not-really-mp4:" + random.Random(seed).randbytes(40_000))
    frame.write_bytes(b"\x89PNG-not-really:" + random.Random(seed + "f").randbytes(3_000))
    return video, frame, 864, 480, frames_of(params)


def params_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prompt_of(params: dict[str, Any]) -> str:
    for item in params.get("content", []):
        if isinstance(item, dict) and item.get("type") == "text":
            return str(item.get("text", ""))
    return ""


def frames_of(params: dict[str, Any]) -> int:
    if params.get("frames") is not None:
        return int(params["frames"])
    return 24 * int(params.get("duration", 5)) + 1


def check_params(params: dict[str, Any]) -> str | None:
    """The few rules of the reference a real API enforces on create (model checked by the adapter)."""
    content = params.get("content")
    if not isinstance(content, list) or not content or content[0].get("type") != "text":
        return "content must start with a text item"
    images = [c for c in content if c.get("type") == "image_url"]
    if len(images) > 1:
        return "at most one image"
    for image in images:
        url = image.get("image_url", {}).get("url", "")
        if image.get("role") not in (None, "", "first_frame"):
            return "bad role"
        if not (url.startswith("https://") or url.startswith("data:image/")):
            return "image_url.url must be https or a data URL"
        if url.startswith("data:image/") and url.split(";")[0][len("data:image/"):] != \
                url.split(";")[0][len("data:image/"):].lower():
            return "the data URL's format must be lower case"
    if ("duration" in params) == ("frames" in params):
        return "give exactly one of duration and frames"
    return None
