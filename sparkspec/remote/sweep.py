"""`remote gc`: mark from the roots that pushes register, sweep what nothing refers to.

Kept: every entry whose key a root names, every entry younger than the grace period (a push
in flight, an apply's upload not yet part of a pushed lock), every entry of a key someone
holds a claim on, and every blob such an entry names or that is younger than the grace
period (uploaded ahead of its entry). Claims, roots, format.json and probes are never
touched. Entries go before blobs, so a gc cut short never leaves an entry without its blob.
A push that reuses an old blob while gc runs can still lose it; its entry is then a miss
(reported once, never installed), not a wrong render.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sparkspec.errors import RemoteError
from sparkspec.remote.claims import Claims
from sparkspec.remote.inventory import entry_blobs, gather_bounded, list_all
from sparkspec.remote.layout import BLOBS, entry_path, is_digest
from sparkspec.remote.session import Remote

DEFAULT_GRACE = timedelta(days=7)


@dataclass
class Sweep:
    roots: int = 0
    kept_entries: int = 0
    kept_blobs: int = 0
    entries: list[str] = field(default_factory=list)  # paths swept (or to sweep, dry run)
    blobs: list[str] = field(default_factory=list)
    freed: int = 0


def _old(modified: datetime | None, cutoff: datetime) -> bool:
    return modified is not None and modified < cutoff


async def collect(remote: Remote, now: datetime, grace: timedelta = DEFAULT_GRACE,
                  dry_run: bool = False) -> Sweep:
    if not remote.writable:
        raise RemoteError(f"remote {remote.display} is read-only here; `sparkspec remote gc` deletes, "
                          "so it needs read-write")
    store = remote.store
    listing = await list_all(store)
    claimed = await Claims(store).live_keys()
    report = Sweep(roots=len(listing.roots))
    rooted: set[str] = set()
    for got in await gather_bounded([store.get(r.path) for r in listing.roots]):
        if got is None:
            continue
        try:
            keys = json.loads(got[0]).get("keys", [])
        except (ValueError, AttributeError):
            raise RemoteError(f"remote {remote.display}: a root is not readable JSON; gc stops rather "
                              "than sweep what it may protect") from None
        rooted.update(k for k in keys if is_digest(k))
    cutoff = now - grace
    keep, sweep = [], []
    for (key, signer), info in sorted(listing.entries.items()):
        if key in rooted or key in claimed or not _old(info.modified, cutoff):
            keep.append((key, signer))
        else:
            sweep.append((key, signer, info.size))
    kept_blobs: set[str] = set()
    for got in await gather_bounded([store.get(entry_path(k, s)) for k, s in keep]):
        if got is not None:
            kept_blobs.update(entry_blobs(got[0]))
    report.kept_entries = len(keep)
    doomed_blobs = [(sha, info.size) for sha, info in sorted(listing.blobs.items())
                    if sha not in kept_blobs and _old(info.modified, cutoff)]
    report.kept_blobs = len(listing.blobs) - len(doomed_blobs)
    report.entries = [entry_path(k, s) for k, s, _ in sweep]
    report.blobs = [f"{BLOBS}/{sha[:2]}/{sha}" for sha, _ in doomed_blobs]
    report.freed = sum(size for *_, size in sweep) + sum(size for _, size in doomed_blobs)
    if not dry_run:
        await gather_bounded([store.delete(p) for p in report.entries])
        await gather_bounded([store.delete(p) for p in report.blobs])
    return report
