"""A fetch worker: a process that downloads and checks finished tasks' outputs for an apply.

    python -m sparkspec.apply.fetchworker FD

FD is this process's end of a socket pair with the apply (`apply.workers`). Messages both
ways are pickles, each after its length (4 bytes, big-endian). The apply sends the file
host's settings and the number of threads first, then ("fetch", id, FetchJob) and
("cancel", id, None); the worker answers each fetch with (id, True, Fetched) or (id, False, the
error). Jobs run in threads, so the worker's downloads wait on the network together.

The worker ignores Ctrl-C (the apply, in the same process group, decides what stops) and
runs at a lower priority than the apply, whose path from a create's answer to its journal
entry must stay short (benchmarks/apply_bench.py journal). When the apply closes its end,
or dies, the worker exits at once: nothing waits for its results any more, and the next
apply removes the temporary files of jobs cut short.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import ssl
import struct
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

if __name__ == "__main__":  # the worker's own process, before httpx (not when workers.py imports this)
    from sparkspec.leanimports import skip_unused

    skip_unused()

from sparkspec.apply.fetch import NO_FRAME, FetchJob, Fetched, fetched_with_strip, frame_problem
from sparkspec.errors import DownloadError
from sparkspec.media.probe import probe_video
from sparkspec.providers.base import Downloaded
from sparkspec.providers.spark.filehost import Abandon, Abandoned, FileHost

HEADER = struct.Struct(">I")
NICE = 5  # below the apply, which the worker's cores are shared with


def frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def fetch_blocking(host: FileHost, job: FetchJob, abandon: Abandon) -> Fetched:
    """`fetch.fetch_here`'s steps, with blocking downloads a cancel can cut short."""
    try:
        video = host.download(job.video_url, job.video_dest, abandon)
        info = probe_video(video.path)
        got: Downloaded | None = None
        problem = NO_FRAME
        if job.frame_url:
            try:
                got = host.download(job.frame_url, job.frame_dest, abandon)
            except DownloadError as exc:
                job.frame_dest.unlink(missing_ok=True)
                problem = frame_problem(exc)
        abandon.check()
        return fetched_with_strip(job, video, info, got, problem)
    except Abandoned:
        job.video_dest.unlink(missing_ok=True)
        job.frame_dest.unlink(missing_ok=True)
        raise


def portable(exc: BaseException) -> BaseException:
    """The error as the apply can unpickle it; else a RuntimeError carrying its traceback
    (a bug: the apply reports it as an internal error)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return RuntimeError(f"fetch worker: {type(exc).__name__}: {exc}\n{text}")


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (length,) = HEADER.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    return pickle.loads(body)


def _warm() -> ssl.SSLContext:
    """Import now what the first jobs need (PyAV, Pillow and its PNG plugin, the contact
    sheet's strips) and load the TLS context the downloads use: the worker starts while
    the apply plans and submits, and its first jobs would otherwise wait on these, all at
    once on the import lock."""
    import av  # noqa: F401
    import httpx
    from PIL import Image

    import sparkspec.media.pngcheck  # noqa: F401
    import sparkspec.review.contact  # noqa: F401

    Image.preinit()
    return httpx.create_ssl_context()


def serve(sock: socket.socket) -> None:
    tls = _warm()
    stream = sock.makefile("rb")
    hello = _read(stream)
    if hello is None:
        return
    settings, threads = hello
    host = FileHost(settings, tls=tls)
    sending = threading.Lock()
    abandons: dict[int, Abandon] = {}

    def run(job_id: int, job: FetchJob, abandon: Abandon) -> None:
        try:
            answer: tuple[int, bool, object] = (job_id, True, fetch_blocking(host, job, abandon))
        except BaseException as exc:  # every outcome goes back to the apply, which decides
            answer = (job_id, False, portable(exc))
        data = frame(answer)
        abandons.pop(job_id, None)
        with sending:
            try:
                sock.sendall(data)
            except OSError:  # the apply is gone
                pass

    pool = ThreadPoolExecutor(threads, thread_name_prefix="sparkspec-fetch")
    while (message := _read(stream)) is not None:
        kind, job_id, job = message
        if kind == "fetch":
            abandons[job_id] = Abandon()
            pool.submit(run, job_id, job, abandons[job_id])
        elif kind == "cancel" and (cancelled := abandons.get(job_id)) is not None:
            cancelled.set()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:
        pass
    code = 0
    try:
        serve(socket.socket(fileno=int(argv[1])))
    except BaseException:  # a bug: said here, and the apply fails the jobs this worker had
        traceback.print_exc()
        code = 1
    # The apply closed its end or is gone: no one waits for the jobs still running.
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv)
