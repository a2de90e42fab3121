"""A fake Spark Dance gateway: a real HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks the reference's wire format (section 5): create, query and signed
output downloads; renders with the local renderer; models render latency;
counts requests per endpoint and per render key; and injects faults on demand.

    api = FakeSparkAPI(api_key="k", latency=(0.2, 1.0), seed=7).start()
    api.inject("create", "status", status=429, headers={"Retry-After": "3"})
    api.outcome("failed", code="003021098", message="generation failed")
    ...
    api.stop()

A render's key is the sha256 of the canonical JSON of `input[0].params`, so the
same scene submitted twice counts twice under one key (`creates_by_key`);
`prompt_of_key` maps a key back to its prompt for readable assertions.

Render modes: "placeholder" serves deterministic bytes that are no video (for
tests of the provider alone); "local" renders every task with sparkspec's local renderer (the
real thing: H.264 at the API's pixel size, from the first frame); "template"
renders once per output shape and serves those bytes for every task of that
shape (for benchmarks that measure orchestration, not the fake's CPU).
`video_padding` appends an ISO BMFF `free` box of that many bytes to every
served video: a valid mp4 of the size wanted, streamed from zeros, never held
in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODEL = "spark_dance_v1_0_pro_fast"
CHUNK = 256 * 1024
Latency = float | tuple[float, float] | Callable[[str, dict[str, Any]], float]


@dataclass
class Fault:
    """One injected fault: `kind` on `endpoint` ("create", "query", "video", "image", "download")."""

    endpoint: str
    kind: str  # reset | slow | status | truncate | garbage | short_length
    times: int = 1
    status: int = 500
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    create_task: bool = False  # reset/slow on create: the task is made before the fault


@dataclass
class Outcome:
    kind: str  # failed | expired | cancelled | completed_with_error
    code: str | None = None
    message: str | None = None
    error_as_string: bool = False
    times: int = 1


@dataclass
class Task:
    id: str
    key: str
    params: dict[str, Any]
    model: str
    created_at: float  # wall clock, reported
    ready_at: float  # monotonic
    latency: float
    outcome: Outcome | None = None
    render: Future[tuple[Path, Path, int, int, int]] | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    queries: int = 0
    downloads: int = 0
    created_mono: float = field(default_factory=time.monotonic)


class FakeSparkAPI:
    def __init__(self, api_key: str = "test-key", *, latency: Latency = 0.0, seed: int = 0,
                 render: str = "local", video_padding: int = 0, dialect: str = "gateway",
                 render_workers: int = 2, report_seed: bool = False, keep_bodies: bool = True,
                 report_usage: bool = True, last_frame: str = "image", usage: dict[str, Any] | None = None,
                 status_names: dict[str, str] | None = None) -> None:
        self.api_key = api_key
        self.latency = latency
        self.rng = random.Random(seed)
        self.seed = seed
        self.render_mode = render
        self.video_padding = video_padding
        self.dialect = dialect
        self.report_seed = report_seed
        self.report_usage = report_usage  # False: tasks finish with an empty usage, as some gateways do
        self.keep_bodies = keep_bodies
        # Where a finished task shows its last frame: "image" (a typed item), "untyped" (an item
        # with no type, known by its .png URL and content type), "last_frame_url" (a field on the
        # task), or "none" (nowhere: the client must extract it from the video).
        self.last_frame = last_frame
        self.usage = usage  # served as the finished task's usage instead of the token count
        self.status_names = status_names or {}  # e.g. {"completed": "done", "in_progress": "rendering"}
        self.lock = threading.RLock()
        self.tasks: dict[str, Task] = {}
        self.forgotten: set[str] = set()
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
        self.events: list[tuple[float, str, str]] = []  # (monotonic, endpoint, task id or "")
        self._executor = ThreadPoolExecutor(max_workers=render_workers)
        self._templates: dict[tuple[str, str, int], Future[tuple[Path, Path, int, int, int]]] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="fake-spark-"))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeSparkAPI:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake-spark",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.endpoint == endpoint or (fault.endpoint == "download" and endpoint in ("video", "image")):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # -- the model of a task ----------------------------------------------------------------
    def _latency(self, key: str, params: dict[str, Any]) -> float:
        if callable(self.latency):
            return float(self.latency(key, params))
        if isinstance(self.latency, tuple):
            low, high = self.latency
            # Seeded by the prompt: the same scene takes the same time, run after run, even
            # when its first frame's bytes change with the renderer.
            draw = random.Random(f"{self.seed}:{_prompt(params)}").random()
            return low + (high - low) * draw
        return float(self.latency)

    def create(self, params: dict[str, Any], model: str) -> Task:
        key = params_key(params)
        with self.lock:
            self._counter += 1
            task_id = f"cgt-{self._counter:05d}-{secrets.token_hex(3)}"
            latency = self._latency(key, params)
            outcome = None
            if self.outcomes:
                outcome = self.outcomes[0]
                outcome.times -= 1
                if outcome.times <= 0:
                    self.outcomes.pop(0)
            task = Task(task_id, key, params, model, time.time(), time.monotonic() + latency, latency, outcome)
            self.tasks[task_id] = task
            self.creates_by_key[key] += 1
            self.prompt_of_key[key] = _prompt(params)
        if outcome is None:
            task.render = self._schedule_render(task)
        return task

    def _schedule_render(self, task: Task) -> Future[tuple[Path, Path, int, int, int]]:
        if self.render_mode == "template":
            shape = (str(task.params.get("resolution", "1080p")), str(task.params.get("ratio", "16:9")),
                     _frames(task.params))
            with self.lock:
                if shape not in self._templates:
                    self._templates[shape] = self._executor.submit(self._render, f"tpl-{len(self._templates)}",
                                                                   dict(task.params, content=[
                                                                       {"type": "text", "text": "template"}]))
                return self._templates[shape]
        return self._executor.submit(self._render, task.id, task.params)

    def _render(self, name: str, params: dict[str, Any]) -> tuple[Path, Path, int, int, int]:
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
            key=params_key(params), scene=name, model=MODEL, prompt=_prompt(params),
            resolution=params.get("resolution", "1080p"), ratio=params.get("ratio", "16:9"),
            duration=None if frames is not None else params.get("duration", 5), frames=frames,
            seed=int(params.get("seed", -1)) if int(params.get("seed", -1)) >= 0 else 1,
            camera_fixed=bool(params.get("camera_fixed", False)), watermark=bool(params.get("watermark", False)),
            first_frame=first)
        video, frame = folder / "video.mp4", folder / "last.png"
        width, height = render_video(request, video, frame)
        return video, frame, width, height, _frames(params)

    def task_object(self, task: Task) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = now - (task.ready_at - task.latency)
        progress = min(0.99, elapsed / task.latency) if task.latency > 0 else 0.99
        rendered = task.render is not None and task.render.done()
        upstream = self.dialect == "upstream"
        obj: dict[str, Any] = {"id": task.id, "model": task.model, "created_at": int(task.created_at)}
        names = self.status_names
        if now < task.ready_at or (task.outcome is None and not rendered):
            running = "running" if upstream else "in_progress"
            obj.update(status=names.get(running, running), progress=round(progress, 3))
            return obj
        if task.outcome is not None:
            out = task.outcome
            if out.kind == "completed_with_error":
                obj.update(status="completed", error={"code": out.code or "003021098",
                                                      "message": out.message or "generation failed"})
            elif out.kind == "failed":
                error: Any = out.message or "generation failed"
                if not out.error_as_string:
                    error = {"code": out.code or "003021098", "error_message": out.message or "generation failed"}
                obj.update(status="failed", error=error)
            else:
                obj.update(status=out.kind)
            return obj
        assert task.render is not None
        _, _, width, height, frames = task.render.result()
        tokens = width * height * frames // 1024
        video_url = f"{self.base_url}/files/{task.id}/video.mp4?X-Signature={task.token}"
        frame_url = f"{self.base_url}/files/{task.id}/last.png?X-Signature={task.token}"
        usage = {"completion_tokens": tokens, "total_tokens": tokens} if self.report_usage else {}
        if self.usage is not None:
            usage = dict(self.usage)
        seed = task.params.get("seed")
        if upstream:
            content = {"video_url": video_url}
            if self.last_frame != "none":
                content["last_frame_url"] = frame_url
            obj.update(status=names.get("succeeded", "succeeded"), content=content, usage=usage, seed=seed)
        else:
            items: list[dict[str, Any]] = [
                {"type": "video", "url": video_url, "jobId": f"job-{task.id}", "duration": frames / 24,
                 "format": "mp4", "resolution": f"{width}x{height}", "ratio": task.params.get("ratio"), "fps": 24}]
            if self.last_frame == "image":
                items.append({"type": "image", "url": frame_url, "format": "png"})
            elif self.last_frame == "untyped":
                items.append({"url": frame_url, "content_type": "image/png"})
            elif self.last_frame == "last_frame_url":
                obj["last_frame_url"] = frame_url
            obj.update(status=names.get("completed", "completed"), progress=1, usage=usage,
                       metadata={"seed": seed} if self.report_seed else {}, output=[{"content": items}])
        return obj


def _placeholder(folder: Path, params: dict[str, Any]) -> tuple[Path, Path, int, int, int]:
    """Bytes that are not a video, for provider tests that only move bytes around."""
    seed = params_key(params)
    video, frame = folder / "video.mp4", folder / "last.png"
    video.write_bytes(b"not-really-mp4:" + random.Random(seed).randbytes(40_000))
    frame.write_bytes(b"\x89PNG-not-really:" + random.Random(seed + "f").randbytes(3_000))
    return video, frame, 864, 480, _frames(params)


def params_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _prompt(params: dict[str, Any]) -> str:
    for item in params.get("content", []):
        if isinstance(item, dict) and item.get("type") == "text":
            return str(item.get("text", ""))
    return ""


def _frames(params: dict[str, Any]) -> int:
    if params.get("frames") is not None:
        return int(params["frames"])
    return 24 * int(params.get("duration", 5)) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # injected resets and timeouts end in broken sockets on purpose


class _Handler(BaseHTTPRequestHandler):
    api: FakeSparkAPI
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (40 ms on Linux), as no real gateway makes anyone wait.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _apply_fault(self, fault: Fault | None) -> bool:
        """Answer with the fault if it ends the request; True when it did."""
        if fault is None:
            return False
        if fault.kind == "reset":
            self._reset()
            return True
        if fault.kind == "slow":  # answer late: a client with a shorter timeout has gone
            time.sleep(fault.delay)
            self.close_connection = True
            return False
        if fault.kind == "status":
            body = fault.body if fault.body is not None else {"message": f"injected HTTP {fault.status}"}
            self._json(fault.status, body, fault.headers)
            return True
        return False

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization")
        with self.api.lock:
            self.api.api_authorization.append(header)
        if header != f"Bearer {self.api.api_key}":
            self._json(401, {"message": "Invalid API key", "error": "unauthorized"})
            return False
        return True

    def _count(self, endpoint: str, key: str | None, task_id: str = "") -> None:
        with self.api.lock:
            self.api.requests[endpoint] += 1
            if key is not None:
                self.api.requests_by_key[key] += 1
            self.api.events.append((time.monotonic(), endpoint, task_id))

    # -- routes -----------------------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/model/v1/generation":
            self._json(404, {"message": "no such route"})
            return
        api = self.api
        fault = api._take_fault("create")
        try:
            body = json.loads(raw)
            params = body["input"][0]["params"]
            model = body["model"]
            assert isinstance(params, dict) and isinstance(model, str)
        except (ValueError, KeyError, IndexError, TypeError, AssertionError):
            self._count("create", None)
            self._json(400, {"message": "malformed request body"})
            return
        key = params_key(params)
        self._count("create", key)
        with api.lock:
            api.create_body_bytes.append(len(raw))
            if api.keep_bodies:
                api.create_bodies.append(body)
        if not self._authorized():
            return
        if fault is not None and fault.kind in ("reset", "slow") and fault.create_task:
            api.create(params, model)  # made, but the client never hears of it
            if fault.kind == "reset":
                self._reset()
            else:
                time.sleep(fault.delay)
                self.close_connection = True
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
            self.close_connection = True
            return
        if self._apply_fault(fault):
            return
        problem = _check_params(params, model)
        if problem:
            self._json(400, {"message": problem})
            return
        task = api.create(params, model)
        self._json(200, api.task_object(task))

    def do_GET(self) -> None:
        path = urlsplit(self.path)
        if path.path.startswith("/model/v1/generation/task/"):
            self._query(path.path.rsplit("/", 1)[1])
        elif path.path.startswith("/files/"):
            self._file(path.path, parse_qs(path.query).get("X-Signature", [""])[0])
        else:
            self._json(404, {"message": "no such route"})

    def _query(self, task_id: str) -> None:
        api = self.api
        with api.lock:
            task = api.tasks.get(task_id)
            forgotten = task_id in api.forgotten
        self._count("query", task.key if task else None, task_id)
        if not self._authorized():
            return
        if self._apply_fault(api._take_fault("query")):
            return
        if task is None or forgotten:
            self._json(404, {"message": f"task {task_id} not found"})
            return
        with api.lock:
            task.queries += 1
        self._json(200, api.task_object(task))

    def _file(self, path: str, signature: str) -> None:
        api = self.api
        parts = path.split("/")
        task = api.tasks.get(parts[2]) if len(parts) == 4 else None
        which = "video" if path.endswith(".mp4") else "image"
        with api.lock:
            api.download_authorization.append(self.headers.get("Authorization"))
        self._count("download", task.key if task else None, task.id if task else "")
        fault = api._take_fault(which)
        if fault is not None and fault.kind in ("reset", "slow", "status"):
            self._apply_fault(fault)
            return
        if task is None or signature != task.token or task.render is None or not task.render.done():
            self._json(404, {"message": "NoSuchKey"})
            return
        with api.lock:
            task.downloads += 1
        video, frame, *_ = task.render.result()
        source = video if which == "video" else frame
        padding = api.video_padding if which == "video" else 0
        size = source.stat().st_size + (8 + padding if padding else 0)
        kind = fault.kind if fault is not None else None
        declared = size + 1000 if kind == "short_length" else size
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4" if which == "video" else "image/png")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if kind == "garbage":
            remaining = size
            rng = random.Random(task.id)
            while remaining > 0:
                n = min(CHUNK, remaining)
                self.wfile.write(rng.randbytes(n))
                remaining -= n
            return
        limit = size // 2 if kind == "truncate" else size
        sent = 0
        for chunk in _body(source, padding):
            if sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - sent])
                sent = limit
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        if sent < declared:
            self.wfile.flush()
            self._reset()


def _body(source: Path, padding: int) -> Any:
    with source.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk
    if padding:
        yield struct.pack(">I", 8 + padding) + b"free"
        zeros = bytes(CHUNK)
        left = padding
        while left > 0:
            n = min(CHUNK, left)
            yield zeros[:n]
            left -= n


def _check_params(params: dict[str, Any], model: str) -> str | None:
    """The few rules of the reference a real gateway enforces on create."""
    if model != MODEL:
        return f"unknown model {model}"
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
