"""A task's outputs from the file host: the checks every download makes, and a blocking
client for the fetch workers (`apply.fetchworker`), which download in processes of their own.

On the event loop a download costs the loop's thread about 3.8 ms of CPU (httpx's async
stack: httpcore, anyio, asyncio's transports) for a 116 KB clip, and a finished task's
outputs are the apply's most frequent requests (two a scene). A worker process runs them
with httpx's sync client on blocking sockets instead, off the loop and off its GIL
(benchmarks/RESULTS.md, session 8). `SparkProvider.download` and `FileHost.download` read
an answer by the same rules (`check_answer`, `check_length`) and retry by the same policy.

A download in a worker thread cannot be cancelled like a coroutine, so a cancel sets its
`Abandon`: that shuts its socket down, which ends a read in progress at once, cuts a
backoff's sleep short, and the thread then removes its file.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from sparkspec.errors import DamagedOutput, DiskError, DownloadError, UrlExpired
from sparkspec.providers.base import Downloaded
from sparkspec.providers.retry import RetryPolicy, read_may_be_retried, retry_after
from sparkspec.providers.spark.apikey import note_request, note_response
from sparkspec.state.unsynced import start_writeback


@dataclass(frozen=True)
class FileHostSettings:
    """What a process needs to download a provider's outputs the way the provider would."""

    base_url: str  # relative output URLs are resolved against it
    timeout: float
    retry: RetryPolicy


class RetryableDownload(Exception):
    """One failed attempt at a download; `final` is the error once the retries are spent."""

    def __init__(self, message: str, *, damaged: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.damaged = damaged
        self.retry_after = retry_after

    def final(self, message: str) -> DownloadError:
        return DamagedOutput(message) if self.damaged else DownloadError(message)


def check_answer(response: httpx.Response) -> None:
    """Raise what an answer to a download's GET means when it is not the file."""
    status = response.status_code
    if status in (403, 404, 410):
        raise UrlExpired(f"the output URL answered HTTP {status} (its signature has lapsed)")
    if status >= 300 and read_may_be_retried(None, status, response.headers):
        raise RetryableDownload(f"the file host answered HTTP {status}", retry_after=retry_after(response.headers))
    if status >= 300:
        raise DownloadError(f"the file host answered HTTP {status}")


def check_length(response: httpx.Response) -> None:
    """A body shorter or longer than announced is damaged (fetched again)."""
    expected = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    received = response.num_bytes_downloaded
    if expected is not None and not encoded and expected.isdigit() and int(expected) != received:
        raise RetryableDownload(f"the file host announced {expected} bytes and sent {received}", damaged=True)


class Abandoned(Exception):
    """The download's caller gave up on it (a cancel): stop and leave no file."""


class Abandon:
    """A download's cancel switch, set from another thread, seen by the download's own."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._socket: socket.socket | None = None
        self._guard = threading.Lock()

    def watch(self, response: httpx.Response) -> None:
        """The response's socket, to shut down on a cancel; raises if cancelled already."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._guard:
            self._socket = sock if isinstance(sock, socket.socket) else None
        self.check()

    def check(self) -> None:
        if self._set.is_set():
            raise Abandoned

    def sleep(self, seconds: float) -> None:
        """A backoff's sleep, cut short by a cancel."""
        if self._set.wait(seconds):
            raise Abandoned

    def set(self) -> None:
        with self._guard:
            self._set.set()
            if self._socket is not None:
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)  # a blocked read returns now
                except OSError:
                    pass


class FileHost:
    """`pools` sync httpx clients (no key: a signed file host never sees it), used in turn
    by any number of threads."""

    def __init__(self, settings: FileHostSettings, *, pools: int = 4, connections: int = 8,
                 tls: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.rng = random.Random()
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [note_request], "response": [note_response]}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        tls = tls or httpx.create_ssl_context()  # one for every client: loading the CA bundle is ~40 ms
        # identity: the announced length is then the length on disk, and can be checked.
        self._clients = [httpx.Client(timeout=settings.timeout, follow_redirects=True, verify=tls,
                                      event_hooks=hooks, limits=limits, headers={"Accept-Encoding": "identity"})
                         for _ in range(pools)]
        self._turn = itertools.cycle(self._clients)
        self._guard = threading.Lock()

    def download(self, url: str, dest: Path, abandon: Abandon) -> Downloaded:
        """Stream `url` into `dest`, hashed as it comes, with the provider's retries; its
        writeback is started, and the lock writer's flush makes it durable (`state.unsynced`)."""
        url = urljoin(self.settings.base_url.rstrip("/") + "/", url)
        policy = self.settings.retry
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            with self._guard:
                client = next(self._turn)
            try:
                return _fetch(client, url, dest, abandon)
            except RetryableDownload as exc:
                delay = policy.delay(attempt, self.rng, exc.retry_after)
                if policy.gives_up(attempt, waited, delay):
                    raise exc.final(f"{exc} (after {attempt} attempt(s))") from None
            abandon.sleep(delay)
            waited += delay

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _fetch(client: httpx.Client, url: str, dest: Path, abandon: Abandon) -> Downloaded:
    digest = hashlib.sha256()
    size = 0
    try:
        abandon.check()
        with client.stream("GET", url) as response:
            abandon.watch(response)
            check_answer(response)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as stream:
                for chunk in response.iter_bytes():
                    abandon.check()
                    digest.update(chunk)
                    stream.write(chunk)
                    size += len(chunk)
                stream.flush()
                start_writeback(stream.fileno())  # durable at the next lock write's flush
            check_length(response)
    except (RetryableDownload, Abandoned):
        dest.unlink(missing_ok=True)
        raise
    except httpx.RemoteProtocolError as exc:
        dest.unlink(missing_ok=True)
        abandon.check()
        raise RetryableDownload(f"the download broke off after {size} bytes ({exc})", damaged=True) from None
    except httpx.TransportError as exc:
        dest.unlink(missing_ok=True)
        abandon.check()
        raise RetryableDownload(f"the download failed ({type(exc).__name__})") from None
    except OSError as exc:  # a full disk, a file size limit: a write names no file, so say which
        dest.unlink(missing_ok=True)
        raise DiskError.from_os(exc, dest) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Downloaded(dest, digest.hexdigest(), size)
