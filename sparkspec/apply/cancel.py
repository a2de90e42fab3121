"""After Ctrl-C: cancel the journalled tasks that still wait in the API's queue.

A queued task has cost nothing yet, and an interrupted apply has said it submits nothing
more, so the tasks it left queued are cancelled where the API can (the gateway's queue
protocol, ModelArk) and leave the journal. Tasks already rendering are kept: they are
paid for, and the next apply collects them. Bounded in time; a task that cannot be
cancelled, or that the API cannot be asked about in time, simply stays in the journal.
"""

from __future__ import annotations

import asyncio

from sparkspec.errors import SparkspecError
from sparkspec.providers.base import CancelsQueued, Provider
from sparkspec.state.journal import Journal, JournalEntry

TIMEOUT = 15.0  # seconds for all of it: the user pressed Ctrl-C and waits


async def cancel_queued(provider: Provider, journal: Journal, timeout: float = TIMEOUT) -> list[str]:
    """The tasks cancelled (as "scene (task id)"), each gone from the journal."""
    if not isinstance(provider, CancelsQueued):
        return []
    entries = [e for e in await asyncio.to_thread(journal.entries) if e.provider == provider.type]

    async def one(entry: JournalEntry) -> str | None:
        try:
            cancelled = await provider.cancel_queued(entry.task_id, entry.locator)
        except SparkspecError:
            return None
        if not cancelled:
            return None
        await asyncio.to_thread(journal.forget, entry.key)
        return f"{entry.scene} (task {entry.task_id})"

    if not entries:
        return []
    tasks = [asyncio.create_task(one(e)) for e in entries]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return sorted(name for task in done if task.exception() is None and (name := task.result()) is not None)
