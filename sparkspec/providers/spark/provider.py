"""The hosted Spark Dance API over httpx: create a task, read it, fetch its outputs.

Wire format: reference section 5 (the gateway), with upstream's own dialect
(section 6) read too. The provider retries its own transport faults within a
bounded budget and then raises `TransientError`; the engine owns the polling
cadence, the journal and the resubmission of 003021099.

Money rule for creates. The API has no idempotency key and no way to list
tasks, so a create that reached the server and whose answer was lost cannot be
found again. The create is therefore retried only where the server cannot have
made a task: the connection was never established (connect error or connect
timeout), or the server answered 429, 500, 502 or 503, which refuse the
request. A read timeout, a connection dropped after the body was sent, a 504
or an unreadable 2xx answer may hide a created task; retrying would risk a
second paid task for every slow answer, so that create fails with
`code="create_unconfirmed"` and the scene fails; the next apply submits it
again, at most one orphan per scene per apply, and the message says so.

The API key goes only into the `Authorization` header of API calls; downloads
use a second client that has no key, so a signed file host never sees it. Text
from the server is scrubbed of the key before it reaches any message, and the
debug log (SPARKSPEC_DEBUG=1) redacts the header.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from sparkspec import apifacts
from sparkspec.errors import (
    AuthError,
    DownloadError,
    ProviderError,
    TaskNotFound,
    TransientError,
)
from sparkspec.providers.base import Downloaded, RenderRequest, TaskState, TaskStatus

log = logging.getLogger("sparkspec.providers.spark")

DEBUG_ENV = "SPARKSPEC_DEBUG"
CREATE_PATH = "/model/v1/generation"
TASK_PATH = "/model/v1/generation/task/"
RUNNING = frozenset({"in_progress", "queued", "in_queue", "processing", "pending", "running", "created"})
COMPLETED = frozenset({"completed", "succeeded", "success"})
ENDED = frozenset({"expired", "cancelled", "canceled"})
CREATE_RETRY_STATUSES = frozenset({429, 500, 502, 503})  # the request was refused: no task exists
IMAGE_CHUNK = 3 * 64 * 1024  # a multiple of 3, so chunks base64-encode without padding
Sleep = Callable[[float], Awaitable[None]]


def api_key_from_env(var: str, environ: Mapping[str, str] = os.environ) -> str:
    """The key from the variable `var`; a clear error, before any work, when it is unusable."""
    key = environ.get(var, "").strip()
    if not key:
        raise AuthError(f"no API key: the environment variable {var} is not set. Export {var} with "
                        f"your Spark API key, or render offline with --provider local.")
    if not key.isascii() or not key.isprintable() or " " in key:
        raise AuthError(f"the API key in {var} contains spaces or characters a header cannot carry; "
                        f"set it again, or render offline with --provider local.")
    return key


def enable_debug_log(environ: Mapping[str, str] = os.environ) -> None:
    """With SPARKSPEC_DEBUG=1, every API call is logged to stderr (the key redacted)."""
    if environ.get(DEBUG_ENV, "") not in ("", "0") and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sparkspec debug: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def redacted_headers(headers: httpx.Headers) -> dict[str, str]:
    return {name: ("<redacted>" if name.lower() in ("authorization", "cookie") else value)
            for name, value in headers.items()}


class SparkProvider:
    type = "spark"

    def __init__(self, base_url: str, api_key: str, model: str = apifacts.MODEL, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0,
                 max_retries: int = 5, max_wait: float = 120.0, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.max_wait = max_wait  # seconds of retry sleeps one call may spend
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._secret = api_key
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [_log_request], "response": [_log_response]}
        self._api = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, event_hooks=hooks,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"})
        # Signed output URLs: no key, no cookies, nothing from the environment's netrc.
        # identity: the announced length is then the length on disk, and can be checked.
        self._files = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True,
                                        event_hooks=hooks, headers={"Accept-Encoding": "identity"})

    def __repr__(self) -> str:
        return f"SparkProvider(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._files.aclose()

    # -- the three calls ------------------------------------------------------------------
    async def submit(self, request: RenderRequest) -> TaskStatus:
        body = await asyncio.to_thread(CreateBody.build, request, request.model or self.model)
        response = await self._call("POST", CREATE_PATH, what=f"creating the task for {request.scene}",
                                    body=body)
        # A task the API made is journalled and polled even if its first status is new to us.
        return self._task(response, f"creating the task for {request.scene}", unknown_running=True)

    async def poll(self, task_id: str) -> TaskStatus:
        response = await self._call("GET", TASK_PATH + quote(task_id, safe=""), what=f"reading task {task_id}")
        return self._task(response, f"reading task {task_id}")

    async def download(self, url: str, dest: Path) -> Downloaded:
        url = urljoin(self.base_url + "/", url)
        failure = DownloadError("no attempt made", code="transport")
        waited = 0.0
        for attempt in range(1, self.max_retries + 2):
            try:
                return await self._download_once(url, dest)
            except _RetryableDownload as exc:
                failure = DownloadError(f"{exc} (after {attempt} attempt(s))", code=exc.code)
            delay = self._backoff(attempt)
            if attempt > self.max_retries or waited + delay > self.max_wait:
                break
            await self.sleep(delay)
            waited += delay
        raise failure

    # -- HTTP with bounded retries ---------------------------------------------------------
    async def _call(self, method: str, path: str, *, what: str, body: CreateBody | None = None) -> httpx.Response:
        creating = body is not None
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                if body is not None:
                    headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
                    response = await self._api.request(method, path, content=body.stream(), headers=headers)
                else:
                    response = await self._api.request(method, path)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                reason = f"could not connect to {self.base_url} ({type(exc).__name__})"
            except httpx.TransportError as exc:
                if creating:
                    raise ProviderError(
                        f"{what}: the connection failed after the request was sent ({type(exc).__name__}); "
                        f"the API may have created a task that sparkspec cannot find again. Not retried, "
                        f"to avoid paying twice; the next apply submits this scene again.",
                        code="create_unconfirmed") from None
                reason = f"{type(exc).__name__} talking to {self.base_url}"
            else:
                status = response.status_code
                if status < 300:
                    return response
                message = self._scrub(_api_message(response))
                if status in (401, 403):
                    raise AuthError(f"{what}: the API refused the key (HTTP {status}: {message}); "
                                    f"check the key's variable, or render offline with --provider local.",
                                    code=f"http_{status}")
                if status == 404 and not creating:
                    raise TaskNotFound(f"{what}: the API does not know this task (HTTP 404)", code="http_404")
                retryable = status in CREATE_RETRY_STATUSES if creating else status == 429 or status >= 500
                if not retryable:
                    if creating and status >= 500:
                        raise ProviderError(
                            f"{what}: HTTP {status}: {message}; the API may have created a task anyway. "
                            f"Not retried, to avoid paying twice.", code="create_unconfirmed")
                    raise ProviderError(f"{what}: HTTP {status}: {message}", code=f"http_{status}")
                reason = f"HTTP {status}: {message}"
                retry_after = _retry_after(response.headers.get("Retry-After"))
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if attempt > self.max_retries or waited + delay > self.max_wait:
                raise TransientError(f"{what}: {reason} (gave up after {attempt} attempt(s))",
                                     code="unavailable", retry_after=retry_after)
            log.debug("%s: %s; retrying in %.2fs", what, reason, delay)
            await self.sleep(delay)
            waited += delay

    def _backoff(self, attempt: int) -> float:
        base: float = min(8.0, 0.5 * 2 ** (attempt - 1))
        return base * (0.5 + self.rng.random() / 2)

    def _task(self, response: httpx.Response, what: str, unknown_running: bool = False) -> TaskStatus:
        try:
            raw = response.json()
        except ValueError:
            raw = None
        if not isinstance(raw, dict):
            code = "create_unconfirmed" if response.request.method == "POST" else "bad_answer"
            raise ProviderError(f"{what}: the API answered HTTP {response.status_code} without a task object",
                                code=code)
        return parse_task(raw, self._scrub, unknown_running)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "<redacted>") if self._secret else text

    async def _download_once(self, url: str, dest: Path) -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self._files.stream("GET", url) as response:
                status = response.status_code
                if status in (403, 404, 410):
                    raise DownloadError(f"the output URL answered HTTP {status} (its signature has lapsed)",
                                        code="url_expired")
                if status == 429 or status >= 500:
                    raise _RetryableDownload(f"the file host answered HTTP {status}", code=f"http_{status}")
                if status >= 300:
                    raise DownloadError(f"the file host answered HTTP {status}", code=f"http_{status}")
                expected = response.headers.get("Content-Length")
                encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
                with dest.open("wb") as stream:
                    async for chunk in response.aiter_bytes():
                        digest.update(chunk)
                        stream.write(chunk)
                        size += len(chunk)
                    stream.flush()
                    # Durable before the engine moves it into the cache; off the event loop.
                    await asyncio.to_thread(os.fsync, stream.fileno())
                received = response.num_bytes_downloaded
                if expected is not None and not encoded and expected.isdigit() and int(expected) != received:
                    raise _RetryableDownload(f"the file host announced {expected} bytes and sent {received}",
                                             code="bad_length")
        except _RetryableDownload:
            dest.unlink(missing_ok=True)
            raise
        except httpx.RemoteProtocolError as exc:
            dest.unlink(missing_ok=True)
            raise _RetryableDownload(f"the download broke off after {size} bytes ({exc})", code="bad_length") \
                from None
        except httpx.TransportError as exc:
            dest.unlink(missing_ok=True)
            raise _RetryableDownload(f"the download failed ({type(exc).__name__})", code="transport") from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Downloaded(dest, digest.hexdigest(), size)


class _RetryableDownload(Exception):
    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class CreateBody:
    """The create call's JSON, streamed: a local first frame is base64-encoded chunk by chunk.

    A 25 MB image would otherwise sit in memory as bytes, as base64 and as JSON at
    once; here at most one chunk of it does, and the length is known up front.
    """

    def __init__(self, prefix: bytes, image: Path | None, image_bytes: int, suffix: bytes) -> None:
        self.prefix, self.image, self.image_bytes, self.suffix = prefix, image, image_bytes, suffix
        self.length = len(prefix) + 4 * math.ceil(image_bytes / 3) + len(suffix)

    @staticmethod
    def build(request: RenderRequest, model: str) -> CreateBody:
        frame = request.first_frame
        path = frame.path if frame is not None and not frame.url else None
        sentinel = f"sparkspec-first-frame-{uuid.uuid4().hex}"
        url: str | None = None
        if frame is not None:
            url = frame.url or sentinel
        text = json.dumps({"model": model, "input": [{"params": create_params(request, url)}]},
                          ensure_ascii=False, separators=(",", ":"))
        if path is None:
            return CreateBody(text.encode("utf-8"), None, 0, b"")
        before, _, after = text.partition(json.dumps(sentinel))
        fmt = image_format(path)
        prefix = f'{before}"data:image/{fmt};base64,'.encode()
        return CreateBody(prefix, path, path.stat().st_size, f'"{after}'.encode())

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.prefix
        if self.image is not None:
            sent = 0
            with self.image.open("rb") as source:
                while chunk := source.read(IMAGE_CHUNK):
                    sent += len(chunk)
                    yield base64.b64encode(chunk)
            if sent != self.image_bytes:
                raise ProviderError(f"{self.image} changed while it was being sent; run apply again",
                                    code="image_changed")
        yield self.suffix


def create_params(request: RenderRequest, first_frame_url: str | None) -> dict[str, Any]:
    """`input[0].params` of the create call (reference sections 2, 5 and 5b)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
    if first_frame_url is not None:
        content.append({"type": "image_url", "image_url": {"url": first_frame_url}, "role": "first_frame"})
    params: dict[str, Any] = {"content": content, "return_last_frame": True,
                              "resolution": request.resolution, "ratio": request.ratio}
    if request.frames is not None:
        params["frames"] = request.frames
    else:
        params["duration"] = request.duration if request.duration is not None else apifacts.DEFAULT_DURATION
    params.update(seed=request.seed, camera_fixed=request.camera_fixed, watermark=request.watermark)
    for name in ("service_tier", "execution_expires_after", "callback_url"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    return params


def image_format(path: Path) -> str:
    """The lower-case format name the data URL carries, read by Pillow from the header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            fmt = (image.format or "").lower()
    except (UnidentifiedImageError, OSError) as exc:
        raise ProviderError(f"first frame {path}: not a readable image ({exc})", code="bad_image") from None
    fmt = "jpeg" if fmt == "mpo" else fmt
    if fmt not in apifacts.IMAGE_FORMATS:
        raise ProviderError(f"first frame {path}: {fmt or 'unknown'} images are not accepted "
                            f"(allowed: {', '.join(apifacts.IMAGE_FORMATS)})", code="bad_image")
    return fmt


def parse_task(raw: Mapping[str, Any], scrub: Callable[[str], str] = str,
               unknown_running: bool = False) -> TaskStatus:
    """A task object of either dialect as a `TaskStatus`."""
    task_id = raw.get("id") or raw.get("task_id")
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or str(task_id) == "":
        raise ProviderError("the API answered with a task object that has no id", code="bad_answer")
    task_id = str(task_id)
    status = str(raw.get("status", "")).lower()
    common: dict[str, Any] = {"progress": _number(raw.get("progress")),
                              "created_at": _number(raw.get("created_at"))}
    if status in RUNNING:
        return TaskStatus(task_id, TaskState.RUNNING, **common)
    if status in COMPLETED:
        video, frame = _outputs(raw)
        usage = _mapping(raw.get("usage"))
        tokens = _integer(usage.get("completion_tokens"))
        if tokens is None:
            tokens = _integer(usage.get("total_tokens"))
        cost = _number(usage.get("cost", raw.get("cost")))
        metadata = _mapping(raw.get("metadata"))
        seed = _integer(raw.get("seed"))
        if seed is None:
            seed = _integer(metadata.get("seed"))
        return TaskStatus(task_id, TaskState.COMPLETED, video_url=video, last_frame_url=frame,
                          tokens=tokens, cost=cost, seed=seed, **dict(common, progress=1.0))
    if status == "failed":
        code, message = _error(raw.get("error"))
        return TaskStatus(task_id, TaskState.FAILED, error_code=code,
                          error_message=scrub(message or "the render failed"), **common)
    if status in ENDED:
        code, message = _error(raw.get("error"))
        text = f"the task {status}" + (f": {message}" if message else "")
        return TaskStatus(task_id, TaskState.FAILED, error_code=code or status,
                          error_message=scrub(text), **common)
    if unknown_running:
        return TaskStatus(task_id, TaskState.RUNNING, **common)
    raise ProviderError(f"task {task_id}: unknown status {scrub(status)!r}; its id stays in the journal, "
                        f"so a later apply can collect it", code="unknown_status")


def _outputs(raw: Mapping[str, Any]) -> tuple[str | None, str | None]:
    video: str | None = None
    frame: str | None = None
    outputs = raw.get("output")
    for output in outputs if isinstance(outputs, list) else [outputs]:
        items = output.get("content") if isinstance(output, dict) else None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("url"), str):
                if item.get("type") == "video" and video is None:
                    video = item["url"]
                elif item.get("type") == "image" and frame is None:
                    frame = item["url"]
    content = raw.get("content")  # upstream's dialect
    if isinstance(content, dict):
        video = video or _string(content.get("video_url"))
        frame = frame or _string(content.get("last_frame_url"))
    return video, frame


def _error(error: Any) -> tuple[str | None, str | None]:
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("error_message") or error.get("message")
        if isinstance(code, int) and not isinstance(code, bool):
            code = f"{code:09d}"  # the API's codes are nine digits with leading zeros
        return (str(code) if code not in (None, "") else None,
                str(message) if message not in (None, "") else None)
    if isinstance(error, str) and error:
        return None, error
    return None, None


def _api_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("message", "error", "error_message", "detail"):
            value = body.get(name)
            if isinstance(value, dict):
                value = value.get("message") or value.get("error_message")
            if isinstance(value, str) and value:
                return value[:500]
    return response.reason_phrase or "no message"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _log_request(request: httpx.Request) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("-> %s %s %s", request.method, _short_url(request.url), redacted_headers(request.headers))


async def _log_response(response: httpx.Response) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("<- %s %s HTTP %d", response.request.method, _short_url(response.request.url),
                  response.status_code)


def _short_url(url: httpx.URL) -> str:
    """Signed URLs carry their signature in the query: keep it out of the log."""
    return str(url.copy_with(query=None)) + ("?<signed>" if url.query else "")


__all__ = ["SparkProvider", "api_key_from_env", "create_params", "enable_debug_log", "parse_task"]
