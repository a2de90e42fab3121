"""Claims: who is rendering a key now, so two machines never both pay for one render.

A machine about to submit creates `claims/<aa>/<key>.json` with If-None-Match: * (one
winner), heartbeats it with If-Match every ttl/4 (each beat changes the body, so the ETag
moves), writes the task id into it once submitted (the claim is also a remote journal) and
deletes it after the render's entry is written. Another machine that finds the claim waits;
when the ETag it sees has not changed for one ttl on its own clock (`ClaimWatch`), the holder
is dead and the waiter takes the claim over with If-Match on that ETag: exactly one taker.
A claim of this very machine whose process is gone (`holder`) is dead at once: no ttl to wait
out. The taker collects the dead holder's task instead of paying for it again.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sparkspec.jsontext import load_json
from sparkspec.remote import holder
from sparkspec.remote.layout import CLAIMS, claim_path, parse_claim_path
from sparkspec.remote.settings import MAX_CLAIM_TTL
from sparkspec.remote.store import ObjectInfo, Store


def _printable(value: object, limit: int) -> str:
    """A name another machine wrote, fit to print: plan and apply show it, and a terminal
    obeys the escape sequences a hostile writer could put in it."""
    return "".join(c for c in str(value) if c.isprintable())[:limit]


def _optional(value: object) -> str | None:
    return None if value is None else _printable(value, 128)


@dataclass(frozen=True)
class ClaimTask:
    """A task the claim holder submitted: what a taker needs to collect it."""

    id: str
    provider: str
    submitted_at: float
    expires_after: int


@dataclass(frozen=True)
class Claim:
    key: str
    owner: str  # one apply run: a random id
    user: str
    host: str
    pid: int
    ttl: float
    beat: int = 0
    task: ClaimTask | None = None
    start: str | None = None  # when the holder's process started (`holder.started`)
    machine: str | None = None  # the holder's kernel boot and pid namespace (`holder.machine`)

    @property
    def who(self) -> str:
        return f"{self.user}@{self.host}"

    def abandoned(self) -> bool:
        """Its holder ran on this machine and its process is gone: dead now, whatever its ttl."""
        return holder.gone(self.host, self.machine, self.pid, self.start)

    def describe(self) -> str:
        """`rendering on <user>@<host>, task <id>`: what plan and apply say about it."""
        task = f", task {self.task.id}" if self.task else ""
        return f"rendering on {self.who}{task}"

    def encode(self) -> bytes:
        body: dict[str, Any] = {"key": self.key, "owner": self.owner, "user": self.user, "host": self.host,
                                "pid": self.pid, "ttl": self.ttl, "beat": self.beat,
                                "task": self.task.__dict__ if self.task else None, "start": self.start,
                                "machine": self.machine}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes, key: str) -> Claim | None:
        """The claim, or None when the body is not one (a damaged claim is treated as dead)."""
        try:
            raw = load_json(data)
            task = raw.get("task")
            claim = Claim(key=key, owner=str(raw["owner"]), user=_printable(raw["user"], 64),
                          host=_printable(raw["host"], 128), pid=int(raw["pid"]), ttl=float(raw["ttl"]),
                          beat=int(raw.get("beat", 0)),
                          task=ClaimTask(_printable(task["id"], 256), _printable(task["provider"], 32),
                                         float(task["submitted_at"]), int(task["expires_after"]))
                          if isinstance(task, dict) else None,
                          start=_optional(raw.get("start")), machine=_optional(raw.get("machine")))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return claim if raw.get("key") == key else None


@dataclass(frozen=True)
class Seen:
    """A claim as read from the store, with the ETag a conditional write needs."""

    claim: Claim | None  # None: unreadable (treated as dead once its ETag stalls)
    etag: str


@dataclass(frozen=True)
class Held:
    """A claim this machine holds."""

    claim: Claim
    etag: str


def new_claim(key: str, ttl: float, owner: str | None = None) -> Claim:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Claim(key=key, owner=owner or uuid.uuid4().hex, user=user, host=socket.gethostname(),
                 pid=os.getpid(), ttl=ttl, start=holder.this_process(), machine=holder.machine())


class Claims:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def read(self, key: str) -> Seen | None:
        found = await self.store.get(claim_path(key))
        if found is None:
            return None
        data, info = found
        return Seen(Claim.decode(data, key), info.etag or "")

    async def acquire(self, claim: Claim) -> Held | Seen:
        """Create the claim (If-None-Match: *): held, or the claim someone else holds."""
        path = claim_path(claim.key)
        while True:
            etag = await self.store.create(path, claim.encode())
            if etag is not None:
                return Held(claim, etag)
            seen = await self.read(claim.key)
            if seen is not None:
                return seen
            # Released between our create and our read: try again.

    async def heartbeat(self, held: Held, task: ClaimTask | None = None) -> Held | None:
        """Renew (If-Match); None when the claim is no longer ours (taken over or deleted)."""
        claim = replace(held.claim, beat=held.claim.beat + 1, task=task or held.claim.task)
        etag = await self.store.update(claim_path(claim.key), claim.encode(), held.etag)
        return Held(claim, etag) if etag is not None else None

    async def take_over(self, mine: Claim, seen: Seen) -> Held | None:
        """Replace a dead claim (If-Match on the ETag that stalled): held, or None if another
        machine took it first or its holder came back."""
        dead_task = seen.claim.task if seen.claim else None
        claim = replace(mine, task=dead_task, beat=(seen.claim.beat + 1) if seen.claim else 0)
        etag = await self.store.update(claim_path(mine.key), claim.encode(), seen.etag)
        return Held(claim, etag) if etag is not None else None

    async def release(self, held: Held) -> None:
        """Delete the claim if it is still ours (a claim taken over is the taker's to delete)."""
        seen = await self.read(held.claim.key)
        if seen is not None and seen.claim is not None and seen.claim.owner == held.claim.owner:
            await self.store.delete(claim_path(held.claim.key))

    async def live_keys(self) -> set[str]:
        """Keys with a claim on the store: one listing (claims are few: renders in flight)."""
        return set(await self.listed())

    async def listed(self) -> dict[str, ObjectInfo]:
        """Each claimed key with its claim's listing (when it was last written)."""
        return {key: info for info in await self.store.list(f"{CLAIMS}/")
                if (key := parse_claim_path(info.path)) is not None}


class ClaimWatch:
    """Judges another machine's claim dead on this machine's clock: its ETag unchanged for
    one ttl (clocks of different machines are never compared)."""

    def __init__(self, ttl: float, monotonic: Callable[[], float]) -> None:
        self.ttl = ttl
        self.monotonic = monotonic
        self.etag: str | None = None
        self.since = 0.0

    def dead(self, seen: Seen) -> bool:
        now = self.monotonic()
        if seen.etag != self.etag:
            self.etag, self.since = seen.etag, now
            return False
        ttl = seen.claim.ttl if seen.claim is not None and seen.claim.ttl > 0 else self.ttl
        # A claim's own ttl is believed up to MAX_CLAIM_TTL (the longest a spec may set): one
        # written with a ttl of 1e18 by anyone who can write to the remote blocks nobody for ever.
        return now - self.since >= min(ttl, MAX_CLAIM_TTL)
