"""The hosted Spark Dance API over httpx: create a task, read it, fetch its outputs.

This module owns the HTTP clients, the retries and the downloads; the
bodies and task objects are built and read in `wire`, the API's error bodies in
`answers`, when to try again in `providers.retry`. The provider retries its own
transport faults within a bounded budget and then raises `TransientError`; the
engine owns the polling cadence, the journal and the resubmission of 003021099.

Money rule for creates (`retry.create_may_be_retried`). The API has no
idempotency key, so a create that reached the server and whose answer was lost
cannot be found again: it is retried only where the server cannot have made a
task. Otherwise it fails with `CreateUnconfirmed` and the scene fails; the next
apply submits it again, at most one orphan per scene per apply, and the message
says so.

Every create and query takes a token from the apply's `RateLimiter` first, so
all tasks together stay under `provider.requests_per_minute`; a call answered
429 (or 503 with Retry-After) pauses the limiter for its Retry-After (or backoff), so no
task of the apply sends a request before that time has passed.

The API key goes only into the `Authorization` header of API calls; downloads
use a second client that has no key, so a signed file host never sees it. Text
from the server is scrubbed of the key before it reaches any message, and the
debug log (SPARKSPEC_DEBUG=1, see `apikey`) redacts the header and signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from sparkspec import apifacts
from sparkspec.errors import (
    BadAnswer,
    CreateUnconfirmed,
    DiskError,
    ProviderError,
    TaskNotFound,
    TransientError,
    UnreadableCreate,
)
from sparkspec.providers.base import Downloaded, RenderRequest, TaskStatus
from sparkspec.providers.ratelimit import RateLimiter
from sparkspec.providers.retry import RetryPolicy, create_may_be_retried, read_may_be_retried, retry_after
from sparkspec.providers.spark.answers import api_words, refusal, rejected
from sparkspec.providers.spark.filehost import FileHostSettings, RetryableDownload, check_answer, check_length
from sparkspec.providers.spark.apikey import log, log_body, log_request, log_response, scrub
from sparkspec.providers.spark.wire import CreateBody, Envelope, parse_task
from sparkspec.state.unsynced import start_writeback

CREATE_PATH = "/model/v1/generation"
TASK_PATH = "/model/v1/generation/task/"
Sleep = Callable[[float], Awaitable[None]]
POOLS = 16  # httpx clients (connection pools) per kind of call; see SparkProvider.__init__
MAX_CONNECTIONS, MAX_KEEPALIVE = 100, 20  # httpx's defaults, for all the pools of a kind together


class SparkProvider:
    type = "spark"
    paid = True
    poll_waits = False

    def __init__(self, base_url: str, api_key: str, model: str = apifacts.MODEL, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0,
                 max_retries: int = 5, max_wait: float = 120.0, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None, limiter: RateLimiter | None = None,
                 key_env: str = "SPARK_API_KEY") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.retry = RetryPolicy(max_retries, max_wait)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.limiter = limiter or RateLimiter(sleep=sleep)
        self.key_env = key_env
        self._secret = api_key
        self._timeout = timeout
        self._in_process_only = transport is not None  # an injected transport exists only here
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [log_request], "response": [log_response]}
        # One TLS context for every client, built when first needed: loading the CA bundle costs
        # ~35 ms of CPU a context. An injected transport needs none.
        self._tls: ssl.SSLContext | bool | None = True if transport is not None else None
        # POOLS small connection pools (httpx clients) of each kind, used in turn: httpcore scans
        # every connection of a pool on each request and each response's close, so that cost
        # grows with the pool. Together they keep httpx's default limit of connections; each
        # keeps alive what it opens, as fewer churns through new connections (a TLS handshake
        # each). An injected transport is one pool whatever the clients: then one client.
        count = 1 if transport is not None else POOLS
        each = -(-MAX_CONNECTIONS // count)
        limits = httpx.Limits(max_connections=each, max_keepalive_connections=min(each, MAX_KEEPALIVE))
        # An http:// API is never spoken TLS to: every call is a path under base_url, and the
        # API's clients follow no redirect.
        verify = False if urlsplit(self.base_url).scheme == "http" else self._tls_context()
        self._pools = count
        self._client_options: dict[str, Any] = dict(transport=transport, timeout=timeout, event_hooks=hooks,
                                                    limits=limits)  # the API's clients and the downloads'
        self._api = _Clients([httpx.AsyncClient(
            **self._client_options, base_url=self.base_url, verify=verify,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"}) for _ in range(count)])
        self._download_clients: _Clients | None = None

    @property
    def _files(self) -> _Clients:
        """The clients that download outputs, made on the first download (an apply whose fetch
        workers download makes none). Signed output URLs: no key, no cookies, nothing from the
        environment's netrc; identity: the announced length is then the length on disk, and
        can be checked."""
        if self._download_clients is None:
            self._download_clients = _Clients([httpx.AsyncClient(
                **self._client_options, follow_redirects=True, verify=self._tls_context(),
                headers={"Accept-Encoding": "identity"}) for _ in range(self._pools)])
        return self._download_clients

    def _tls_context(self) -> ssl.SSLContext | bool:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def file_host(self) -> FileHostSettings | None:
        """How a fetch worker in another process downloads this provider's outputs (no key:
        signed URLs need none); None when only this process can (an injected transport)."""
        return None if self._in_process_only else FileHostSettings(self.base_url, self._timeout, self.retry)

    def __repr__(self) -> str:
        return f"SparkProvider(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._api.aclose()
        if self._download_clients is not None:
            await self._download_clients.aclose()

    # -- the three calls ------------------------------------------------------------------
    async def submit(self, request: RenderRequest) -> TaskStatus:
        body = await self._body(request, request.model or self.model)
        response = await self._call("POST", CREATE_PATH, what=f"creating the task for {request.scene}",
                                    body=body)
        return self._task(response, f"creating the task for {request.scene}")

    async def poll(self, task_id: str, locator: str | None = None) -> TaskStatus:
        what = f"reading task {task_id}"
        status = self._task(await self._call("GET", TASK_PATH + quote(task_id, safe=""), what=what), what)
        if status.task_id != task_id:  # a proxy's or a cache's answer about something else
            raise BadAnswer(f"{what}: the answer is about task {status.task_id!r}")
        return status

    async def download(self, url: str, dest: Path) -> Downloaded:
        url = urljoin(self.base_url + "/", url)
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._download_once(url, dest)
            except RetryableDownload as exc:
                delay = self.retry.delay(attempt, self.rng, exc.retry_after)
                if self.retry.gives_up(attempt, waited, delay):
                    raise exc.final(f"{exc} (after {attempt} attempt(s))") from None
            await self.sleep(delay)
            waited += delay

    @staticmethod
    async def _body(request: RenderRequest, model: str, envelope: Envelope | None = None) -> CreateBody:
        """The create body; off the event loop only when it reads a local first frame's header."""
        frame = request.first_frame
        if frame is None or frame.url:
            return CreateBody.build(request, model, envelope)
        return await asyncio.to_thread(CreateBody.build, request, model, envelope)

    # -- HTTP with bounded retries ---------------------------------------------------------
    async def _call(self, method: str, path: str, *, what: str, body: CreateBody | None = None) -> httpx.Response:
        creating = body is not None
        may_retry = create_may_be_retried if creating else read_may_be_retried
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            wait_for: float | None = None
            status: int | None = None
            try:
                async with self.limiter.request():
                    if body is not None:
                        headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
                        response = await self._api.next().request(method, path, content=body.stream(), headers=headers)
                    else:
                        response = await self._api.next().request(method, path)
            except httpx.TransportError as exc:
                if not may_retry(exc):
                    raise CreateUnconfirmed(
                        f"{what}: the connection failed after the request was sent ({type(exc).__name__}); "
                        f"the API may have created a task that sparkspec cannot find again. Not retried, "
                        f"to avoid paying twice; the next apply submits this scene again.") from None
                reason = (f"could not connect to {self.base_url} ({type(exc).__name__})"
                          if isinstance(exc, httpx.ConnectError) else f"{type(exc).__name__} talking to {self.base_url}")
            else:
                log_body(what, response, self._secret)
                status = response.status_code
                if status < 300:
                    return response
                error = self._refusal(response, what)
                if error is not None:
                    raise error
                if status == 404 and not creating:
                    raise TaskNotFound(f"{what}: the API does not know this task (HTTP 404)")
                wait_for = retry_after(response.headers)
                if not may_retry(None, status, response.headers, api_words(response)[1]):
                    if creating and status >= 500:
                        raise CreateUnconfirmed(
                            f"{what}: HTTP {status}: {self._scrub(_words(response))}; the API may have created "
                            f"a task anyway. Not retried, to avoid paying twice; the next apply submits "
                            f"this scene again.")
                    raise rejected(response, what, self._scrub)
                reason = f"HTTP {status}: {self._scrub(_words(response))}"
            delay = self.retry.delay(attempt, self.rng, wait_for)
            if self.retry.gives_up(attempt, waited, delay):
                raise TransientError(f"{what}: {reason} (gave up after {attempt} attempt(s))", retry_after=wait_for)
            log.debug("%s: %s; retrying in %.2fs", what, reason, delay)
            if status == 429 or (status == 503 and wait_for is not None):
                await self.limiter.pause(delay)  # the limit is the account's: every task waits
            else:
                await self.sleep(delay)
            waited += delay

    def _refusal(self, response: httpx.Response, what: str) -> ProviderError | None:
        """The error an answer ends the call with, never retried (the key, the account, a
        rejected request), by the dialect's own reading; None: the shared rules decide."""
        return refusal(response, what, self._scrub, self.key_env)

    def _task(self, response: httpx.Response, what: str) -> TaskStatus:
        try:
            raw = response.json()
        except ValueError:
            raw = None
        try:
            if not isinstance(raw, dict):
                raise BadAnswer(f"the API answered HTTP {response.status_code} without a task object")
            return parse_task(raw, self._scrub)
        except BadAnswer as exc:
            if response.request.method == "POST":
                raise UnreadableCreate(f"{what}: {exc}; it may have created a task that sparkspec cannot find "
                                       f"again") from None
            raise BadAnswer(f"{what}: {exc}") from None

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secret)

    async def _download_once(self, url: str, dest: Path) -> Downloaded:
        digest = hashlib.sha256()
        size = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self._files.next().stream("GET", url) as response:
                check_answer(response)
                with dest.open("wb") as stream:
                    async for chunk in response.aiter_bytes():
                        digest.update(chunk)
                        stream.write(chunk)
                        size += len(chunk)
                    stream.flush()
                    # Made durable by the next lock write's flush (state.unsynced): while the
                    # task is in the journal, a file lost to a power cut is fetched again.
                    start_writeback(stream.fileno())
                check_length(response)
        except RetryableDownload:
            dest.unlink(missing_ok=True)
            raise
        except httpx.RemoteProtocolError as exc:
            dest.unlink(missing_ok=True)
            raise RetryableDownload(f"the download broke off after {size} bytes ({exc})", damaged=True) from None
        except httpx.TransportError as exc:
            dest.unlink(missing_ok=True)
            raise RetryableDownload(f"the download failed ({type(exc).__name__})") from None
        except OSError as exc:  # a full disk, a file size limit: a write names no file, so say which
            dest.unlink(missing_ok=True)
            raise DiskError.from_os(exc, dest) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return Downloaded(dest, digest.hexdigest(), size)


class _Clients:
    """httpx clients alike but for their connection pools, handed out in turn."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self._clients = clients
        self._turn = itertools.cycle(clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def _words(response: httpx.Response) -> str:
    return api_words(response)[0]
