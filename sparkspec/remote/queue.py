"""Uploads that failed, kept in `.sparkspec/remote-queue.json` until a later apply or `push` succeeds.

A render is never lost to a flaky store: it is in the local cache already, and its key waits
here (per remote) until it is pushed. Written atomically; the apply lock keeps writers single.

The lock's root waits here too (`ROOT` in a remote's list): an apply that is about to upload
marks it before its first upload and clears it once the root is registered, so an apply cut
short between the two (a kill, a crash, a store that stopped answering) leaves the next apply
or `push` to register it. Without a root, `remote gc` would sweep what the committed lock names.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sparkspec.fsutil import atomic_write_text
from sparkspec.jsontext import load_json
from sparkspec.remote.layout import is_digest

QUEUE_NAME = "remote-queue.json"
ROOT = "root"  # in a remote's list: the lock's root is still to be registered


class PushQueue:
    def __init__(self, state_dir: Path, identity: str) -> None:
        self.path = state_dir / QUEUE_NAME
        self.identity = identity
        # Apply adds from several worker threads at once; each change reads, edits and rewrites the
        # file, so without this two failed uploads at once could keep only one of them queued.
        self._changing = threading.Lock()

    def _load(self) -> dict[str, list[str]]:
        try:
            raw = load_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): [x for x in v if x == ROOT or is_digest(x)] for k, v in raw.items() if isinstance(v, list)}

    def keys(self) -> list[str]:
        """The keys of the renders waiting to be pushed."""
        return [k for k in self._load().get(self.identity, []) if k != ROOT]

    def root_pending(self) -> bool:
        return ROOT in self._load().get(self.identity, [])

    def mark_root(self) -> None:
        self._change(add=(ROOT,))

    def root_registered(self) -> None:
        self._change(remove=(ROOT,))

    def add(self, key: str) -> None:
        self._change(add=(key,))

    def remove(self, *keys: str) -> None:
        self._change(remove=keys)

    def _change(self, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> None:
        with self._changing:
            self._change_locked(add, remove)

    def _change_locked(self, add: tuple[str, ...], remove: tuple[str, ...]) -> None:
        memo = self._load()
        current = memo.get(self.identity, [])
        wanted = [k for k in dict.fromkeys(current + list(add)) if k not in remove]
        if wanted == current:
            return
        if wanted:
            memo[self.identity] = wanted
        else:
            memo.pop(self.identity, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(memo, sort_keys=True, indent=2) + "\n")
