"""The hosted Spark Dance API over httpx: create a task, read it, fetch its outputs.

This module owns the two HTTP clients, the retries and the downloads; the
bodies and task objects are built and read in `wire`. The provider retries its
own transport faults within a bounded budget and then raises `TransientError`;
the engine owns the polling cadence, the journal and the resubmission of
003021099.

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
debug log (SPARKSPEC_DEBUG=1, see `apikey`) redacts the header.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
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
from sparkspec.providers.base import Downloaded, RenderRequest, TaskStatus
from sparkspec.providers.spark.apikey import log, log_request, log_response
from sparkspec.providers.spark.wire import CreateBody, parse_task

CREATE_PATH = "/model/v1/generation"
TASK_PATH = "/model/v1/generation/task/"
CREATE_RETRY_STATUSES = frozenset({429, 500, 502, 503})  # the request was refused: no task exists
Sleep = Callable[[float], Awaitable[None]]


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
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [log_request], "response": [log_response]}
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

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
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


