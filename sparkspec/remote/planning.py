"""Planning with the team's remote: which renders to pull, which to wait for.

The planner stays a pure function of what it is given; this module gives it a `RemoteView`
and fills it in rounds. Round one plans with an empty view, which records every key the
plan would render; those keys are looked up together (a listing per shard, see `index`) and
the plan is made again. A pulled scene's entry names its last frame, so scenes chained after
it now have keys of their own: the next round looks those up, until no new key is asked.
Renders the lock records (from git) are `known`: where a listing shows their entry, the
lock's record stands in for it, unread (its blobs are checked against the lock's digests).

A remote error never fails a plan: the plan of the last round that had answers stands, and
one warning carries the store's own words. An unreachable store costs at most `BUDGET`
seconds in all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from sparkspec.errors import RemoteError
from sparkspec.plan.model import Plan, RemoteView
from sparkspec.remote.claims import Claim
from sparkspec.remote.session import Remote
from sparkspec.remote.store import StoreTimeout
from sparkspec.state.cache import CachedRender
from sparkspec.state.journal import JournalEntry
from sparkspec.state.lockfile import Lock

BUDGET = 25.0  # seconds for every round together; the store's own timeouts are shorter


@dataclass
class RemoteFindings:
    """What the remote answered for this plan (a `RemoteView`); the engine pulls from `hits`."""

    hits: dict[str, CachedRender] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)  # key -> "rendering on user@host, task id"
    left: dict[str, Claim] = field(default_factory=dict)  # key -> a crashed apply's claim, on this machine
    asked: dict[str, None] = field(default_factory=dict)

    def entry(self, key: str) -> CachedRender | None:
        self.asked[key] = None
        return self.hits.get(key)

    def claim(self, key: str) -> str | None:
        return self.claims.get(key)

    def abandoned(self, key: str) -> tuple[str, JournalEntry | None] | None:
        claim = self.left.get(key)
        if claim is None:
            return None
        task = claim.task
        return f"{claim.who}, pid {claim.pid}", None if task is None else JournalEntry(
            key, "", task.provider, task.id, task.submitted_at, task.expires_after)


def lock_renders(lock: Lock) -> dict[str, CachedRender]:
    """The renders the lock records (every take), as cache entries by key."""
    found: dict[str, CachedRender] = {}
    for record in lock.scenes.values():
        for take in (record, *record.takes):
            found.setdefault(take.key, CachedRender(
                key=take.key, provider=take.provider, model=take.model, task_id=take.task_id, seed=take.seed,
                tokens=take.tokens, video_sha256=take.video.sha256, video_bytes=take.video.bytes,
                last_frame_sha256=take.last_frame.sha256, last_frame_bytes=take.last_frame.bytes,
                inputs=take.inputs, seed_derived=take.seed_derived, cost=take.cost,
                last_frame_extracted=take.last_frame_extracted, rendered_frame_sha256=take.rendered_frame_sha256))
    return found


def plan_with_remote(make_plan: Callable[[RemoteView | None], Plan], remote: Remote,
                     warnings: list[str], budget: float = BUDGET,
                     lock: Lock | None = None) -> tuple[Plan, RemoteFindings]:
    findings = RemoteFindings()
    plan = make_plan(findings)
    looked: set[str] = set()
    known = lock_renders(lock) if lock is not None else {}

    async def rounds() -> None:
        nonlocal plan
        while new := [k for k in findings.asked if k not in looked]:
            looked.update(new)
            found = await remote.lookup(new, known=known, check_blobs=True)
            for key, reason in sorted(found.ignored.items()):
                warnings.append(f"remote {remote.display}: entry for key {key[:12]} ignored: {reason}")
            findings.hits.update(found.hits)
            findings.claims.update({k: c.describe() for k, c in found.claims.items()})
            findings.left.update(found.abandoned)
            if not found.hits and not found.claims and not found.abandoned:
                return  # nothing changes in the plan: no new keys either
            plan = make_plan(findings)

    silent = f"remote {remote.display}: did not answer the plan in time; not asked again in this run"
    try:
        asyncio.run(asyncio.wait_for(rounds(), budget))
    except StoreTimeout as exc:
        warnings.append(f"{exc}; planned without it")
        remote.store.silent = silent
    except RemoteError as exc:
        warnings.append(f"{exc}; planned without it")
    except TimeoutError:
        warnings.append(f"remote {remote.display}: no answer within {budget:.0f} s; planned without it")
        # The rest of the run does not wait on a store that did not answer the plan (each
        # upload, the probe, the sheet would wait out a timeout of its own): apply queues its
        # uploads for the next apply or push.
        remote.store.silent = silent
    return plan, findings
