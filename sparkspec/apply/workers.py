"""Fetch workers: processes that download and check finished tasks' outputs for the apply.

At zero render latency an apply is bound by its event loop's thread: each scene's two
downloads and the checks of its video and last frame (about two thirds of a scene's CPU)
competed on one GIL with the creates, the journal and the lock. In worker processes they
run on the machine's other cores, and the loop keeps only the API calls and the state
(benchmarks/RESULTS.md, session 8). The engine starts them for an apply with many renders
(`commands.apply.fetch_worker_count`); a provider offers them with `file_host()`.

A worker that dies (a crash in a media library on a hostile file, a kill) fails the jobs
it had with a DownloadError (their tasks stay in the journal: the next apply collects them
at no new cost); later jobs go to the workers still alive, then to the loop itself.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sparkspec
from sparkspec.apply.fetch import FetchJob, Fetched
from sparkspec.apply.fetchworker import HEADER, frame
from sparkspec.errors import DownloadError
from sparkspec.providers.spark.filehost import FileHostSettings

CANCEL_WAIT = 5.0  # seconds a cancelled job is given to remove its files
EXIT_WAIT = 2.0  # seconds a closed worker is given to exit before it is killed
THREADS = 8  # jobs at once in each worker: downloads mostly wait on the network


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: dict[int, asyncio.Future[Fetched]] = field(default_factory=dict)
    gone: str | None = None  # why it no longer takes jobs

    def send(self, message: object) -> None:
        self.writer.write(frame(message))

    async def listen(self) -> None:
        """Hand each answer to its job; when the worker is gone, fail the jobs it had."""
        try:
            while True:
                (length,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                job_id, ok, value = pickle.loads(await self.reader.readexactly(length))
                future = self.pending.pop(job_id, None)
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        except (asyncio.IncompleteReadError, OSError):
            pass
        code = self.process.poll()
        self.gone = self.gone or f"the fetch worker (process {self.process.pid}) exited" + (
            f" with code {code}" if code is not None else "")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(DownloadError(f"{self.gone} while it fetched the outputs"))
        self.pending.clear()


class FetchWorkers:
    """`count` worker processes, each running up to THREADS jobs at once."""

    def __init__(self, settings: FileHostSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.workers: list[_Worker] = []
        self.listeners: list[asyncio.Task[None]] = []
        self.ids = itertools.count()

    async def start(self, spawned: Sequence[Spawned] = ()) -> None:
        """Start the processes (they import their libraries while the first renders run);
        `spawned`: ones `spawn` started earlier, taken first."""
        pending = list(spawned)
        pending += spawn(self.count - len(pending))
        try:
            while pending:
                process, ours = pending[0]
                reader, writer = await asyncio.open_unix_connection(sock=ours)
                pending.pop(0)
                worker = _Worker(process, reader, writer)
                worker.send((self.settings, THREADS))
                self.workers.append(worker)
                self.listeners.append(asyncio.create_task(worker.listen(), name="fetch-worker"))
        except BaseException:
            discard(pending)
            raise

    async def fetch(self, job: FetchJob) -> Fetched | None:
        """The job's outcome from the least busy worker; None when no worker is left."""
        alive = [w for w in self.workers if w.gone is None]
        if not alive:
            return None
        worker = min(alive, key=lambda w: len(w.pending))
        job_id = next(self.ids)
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        worker.pending[job_id] = future
        worker.send(("fetch", job_id, job))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                worker.send(("cancel", job_id, None))
                try:
                    await asyncio.wait_for(future, CANCEL_WAIT)
                except BaseException:  # its own outcome no longer matters
                    pass
            job.video_dest.unlink(missing_ok=True)
            job.frame_dest.unlink(missing_ok=True)
            raise

    async def close(self) -> None:
        """Close every worker's socket (the worker exits) and reap the processes."""
        for worker in self.workers:
            worker.gone = worker.gone or "the apply is over"
            worker.writer.close()
        for listener in self.listeners:
            listener.cancel()
        await asyncio.gather(*self.listeners, return_exceptions=True)
        await asyncio.to_thread(_reap, [w.process for w in self.workers])


Spawned = tuple[subprocess.Popen[bytes], socket.socket]  # a worker process and the apply's end of its socket


def spawn(count: int) -> list[Spawned]:
    """`count` worker processes, started: each imports its libraries, then waits for its
    settings on the socket (`FetchWorkers.start`). An apply that turns out to need none
    closes the socket (`discard`): the worker exits."""
    # The worker imports this very sparkspec, wherever it was imported from here.
    env = dict(os.environ)
    root = str(Path(sparkspec.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    spawned: list[Spawned] = []
    try:
        for _ in range(count):
            ours, theirs = socket.socketpair()
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "sparkspec.apply.fetchworker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            spawned.append((process, ours))
    except BaseException:
        discard(spawned)
        raise
    return spawned


class Early:
    """Workers started before the plan (`commands.apply.early_workers`), for the engine to
    take; the apply discards what it did not take."""

    def __init__(self, spawned: Sequence[Spawned]) -> None:
        self._spawned = list(spawned)

    def take(self, count: int) -> list[Spawned]:
        taken, self._spawned = self._spawned[:count], self._spawned[count:]
        return taken

    def discard(self) -> None:
        discard(self.take(len(self._spawned)))


def discard(spawned: Sequence[Spawned]) -> None:
    """Workers `spawn` started that no apply took: stopped at once (they are still importing)."""
    for process, ours in spawned:
        ours.close()
        process.kill()
        process.wait()


def _reap(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        try:
            process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
