"""Downloads of a task's outputs from the file host, each in a worker thread.

A download is the apply's most frequent request (two a scene) and on the event loop it was
its most expensive one: httpx's async stack (httpcore, anyio, asyncio's transports) costs
about 3.8 ms of CPU for a 116 KB clip, held by the loop's thread, against 2.6 ms for httpx's
sync client on a blocking socket in a thread of its own, which also writes, hashes and
fsyncs the file there (benchmarks/RESULTS.md, session 7). The loop only waits for the result.

A download in a thread cannot be cancelled like a coroutine, so a cancel (Ctrl-C, a failed
scene with --fail-fast) sets the download's `Abandon`: that shuts its socket down, which
ends a read in progress at once, and the thread then removes its file. The cancelled caller
waits up to CANCEL_WAIT for that, so no file is left behind when it returns; a request still
waiting for its answer's headers ends at its own timeout and leaves no file either.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import queue
import socket
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from sparkspec.errors import DamagedOutput, DownloadError, UrlExpired
from sparkspec.providers.base import Downloaded
from sparkspec.providers.retry import read_may_be_retried, retry_after
from sparkspec.providers.spark.apikey import note_request, note_response

T = TypeVar("T")
CANCEL_WAIT = 5.0  # seconds a cancelled download is given to remove its file


class RetryableDownload(Exception):
    """One failed attempt at a download; `final` is the error once the retries are spent."""

    def __init__(self, message: str, *, damaged: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.damaged = damaged
        self.retry_after = retry_after

    def final(self, message: str) -> DownloadError:
        return DamagedOutput(message) if self.damaged else DownloadError(message)


class _Abandoned(Exception):
    """The download's caller was cancelled: stop and leave no file."""


class Abandon:
    """A download's cancel switch, thrown from the event loop, seen by its thread."""

    def __init__(self) -> None:
        self._set = False
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
        if self._set:
            raise _Abandoned

    def set(self) -> None:
        with self._guard:
            self._set = True
            if self._socket is not None:
                try:
                    self._socket.shutdown(socket.SHUT_RDWR)  # a blocked read returns now
                except OSError:
                    pass


class FileHost:
    """`pools` sync httpx clients (no key: a signed file host never sees it), used in turn,
    at most `threads` downloads at once, in as many daemon threads."""

    def __init__(self, *, pools: int, limits: httpx.Limits, timeout: float, verify: Any, threads: int) -> None:
        hooks: dict[str, list[Any]] = {"request": [note_request], "response": [note_response]}
        # identity: the announced length is then the length on disk, and can be checked.
        self._clients = [httpx.Client(timeout=timeout, follow_redirects=True, verify=verify, event_hooks=hooks,
                                      limits=limits, headers={"Accept-Encoding": "identity"})
                         for _ in range(pools)]
        self._turn = itertools.cycle(self._clients)
        self._threads = threads
        self._workers = _Workers(threads)
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it

    async def fetch(self, url: str, dest: Path) -> Downloaded:
        """Stream `url` into `dest` in a worker thread, hashed as it comes and fsync'd."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        async with self._slots:
            abandon = Abandon()
            future = self._workers.run(_fetch, next(self._turn), url, dest, abandon)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                abandon.set()
                try:
                    await asyncio.wait_for(future, CANCEL_WAIT)
                except BaseException:  # its own failure, or still waiting for headers: it leaves no file
                    pass
                dest.unlink(missing_ok=True)
                raise

    def close(self) -> None:
        self._workers.close()
        for client in self._clients:
            client.close()


class _Workers:
    """Daemon threads taking jobs from a queue, started as the jobs come (at most `count`) and
    stopped by `close`. Daemon: one still waiting for a file host's answer after a cancel never
    holds up the process's exit, as an executor's threads would (they are joined at exit).
    Started once each, not a thread a download: starting a thread makes the caller, the event
    loop, wait until the new thread runs."""

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._count = count
        self._started = 0

    def run(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`call(*args)` in one of the threads; its outcome in the returned future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def hand_over(outcome: Callable[[], None]) -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop has closed: nobody waits for this download any more
                pass

        def job() -> None:
            try:
                result = call(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
                error = exc
                hand_over(lambda: future.set_exception(error))
            else:
                hand_over(lambda: future.set_result(result))

        self._jobs.put(job)
        if self._started < self._count:
            self._started += 1
            threading.Thread(target=self._work, name="sparkspec-download", daemon=True).start()
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self) -> None:
        for _ in range(self._started):
            self._jobs.put(None)
        self._started = self._count  # no new thread after close


def _fetch(client: httpx.Client, url: str, dest: Path, abandon: Abandon) -> Downloaded:
    digest = hashlib.sha256()
    size = 0
    try:
        abandon.check()
        with client.stream("GET", url) as response:
            abandon.watch(response)
            status = response.status_code
            if status in (403, 404, 410):
                raise UrlExpired(f"the output URL answered HTTP {status} (its signature has lapsed)")
            if status >= 300 and read_may_be_retried(None, status, response.headers):
                raise RetryableDownload(f"the file host answered HTTP {status}",
                                        retry_after=retry_after(response.headers))
            if status >= 300:
                raise DownloadError(f"the file host answered HTTP {status}")
            expected = response.headers.get("Content-Length")
            encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
            dest.parent.mkdir(parents=True, exist_ok=True)
            with dest.open("wb") as stream:
                for chunk in response.iter_bytes():
                    abandon.check()
                    digest.update(chunk)
                    stream.write(chunk)
                    size += len(chunk)
                stream.flush()
                os.fsync(stream.fileno())  # durable before the engine moves it into the cache
            received = response.num_bytes_downloaded
            if expected is not None and not encoded and expected.isdigit() and int(expected) != received:
                raise RetryableDownload(f"the file host announced {expected} bytes and sent {received}",
                                        damaged=True)
    except RetryableDownload:
        dest.unlink(missing_ok=True)
        raise
    except _Abandoned:
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
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Downloaded(dest, digest.hexdigest(), size)
