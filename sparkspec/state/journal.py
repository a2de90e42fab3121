"""The journal of submitted tasks: a paid task's id is on disk before it is polled.

One JSON file per key under .sparkspec/journal/, written atomically (fsync'd), so
an apply killed at any moment leaves every task it created findable by the next
one, which collects it instead of paying for it again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sparkspec.fsutil import atomic_write_text, fsync_dir


@dataclass(frozen=True)
class JournalEntry:
    key: str
    scene: str
    provider: str
    task_id: str
    submitted_at: float  # unix seconds, to judge expiry
    expires_after: int  # seconds
    locator: str | None = None  # what the provider needs besides the id to find the task (queue URLs)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> JournalEntry | None:
        try:
            raw = json.loads(self._path(key).read_text(encoding="utf-8"))
            return JournalEntry(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def record(self, key: str, scene: str, provider: str, task_id: str, expires_after: int,
               now: float | None = None, locator: str | None = None) -> JournalEntry:
        entry = JournalEntry(key, scene, provider, task_id, time.time() if now is None else now, expires_after,
                             locator)
        atomic_write_text(self._path(key), json.dumps(entry.__dict__, sort_keys=True))
        return entry

    def forget(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        fsync_dir(self.directory)

    def entries(self) -> list[JournalEntry]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            entry = self.get(path.stem)
            if entry is not None:
                found.append(entry)
        return found
