"""The apply's pulls from the team's remote stream a bounded number at once: every pulled
scene starts together, and each download holds buffers (peak RSS, benchmarks/RESULTS.md)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from applied import cached_render
from sparkspec.remote.applying import TRANSFERS, RemoteApply
from sparkspec.remote.session import open_remote
from sparkspec.remote.transfer import push_render
from sparkspec.state.cache import Cache
from sparkspec.state.journal import Journal


def test_pulls_stream_at_most_transfers_at_once(tmp_path: Path) -> None:
    env = {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"}
    here = Cache(tmp_path / "here")
    renders = [cached_render(here, tmp_path) for _ in range(3 * TRANSFERS)]
    remote = open_remote(None, tmp_path / "state", env)
    assert remote is not None
    for render in renders:
        asyncio.run(push_render(remote.store, render, here, None, "unsigned"))

    there = Cache(tmp_path / "there")
    applying = RemoteApply(remote, there, Journal(tmp_path / "journal"), tmp_path / "tmp", lambda event: None,
                           hits={r.key: r for r in renders})
    inner, now, most = remote.pull, [0], [0]

    async def counted(*args: Any, **kwargs: Any) -> None:
        now[0] += 1
        most[0] = max(most[0], now[0])
        try:
            await asyncio.sleep(0.01)
            await inner(*args, **kwargs)
        finally:
            now[0] -= 1

    remote.pull = counted  # type: ignore[method-assign]

    async def pull_all() -> None:
        await asyncio.gather(*(applying.pull(f"s{i}", r.key) for i, r in enumerate(renders)))

    asyncio.run(pull_all())
    assert most[0] == TRANSFERS
    assert all(there.lookup(r.key) == r for r in renders)


def test_failed_uploads_added_from_many_threads_at_once_are_all_queued(tmp_path: Path) -> None:
    """Apply queues failed uploads from worker threads at once: none may be lost."""
    import threading

    from sparkspec.remote.queue import PushQueue

    queue = PushQueue(tmp_path, "s3://bucket/prefix")
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(24)]
    workers = [threading.Thread(target=queue.add, args=(key,)) for key in keys]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(queue.keys()) == sorted(keys)
