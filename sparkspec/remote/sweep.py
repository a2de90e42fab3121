"""`remote gc`: mark from the roots that pushes register, sweep what nothing refers to.

Kept: every entry whose key a root names, every entry younger than the grace period (a push
in flight, an apply's upload not yet part of a pushed lock), every entry of a key someone
holds a live claim on (renewed within the grace period, and at least the last day: a claim
older than that is a dead machine's), and every blob such an entry names or that is younger than the grace
period (uploaded ahead of its entry), and every contact sheet a root names or younger than
the grace period (the others are pictures any apply makes again). Claims, roots, format.json
and probes are never touched. Entries go before blobs, so a gc cut short never leaves an entry without its blob.
A push that reuses an old blob while gc runs can still lose it; its entry is then a miss
(reported once, never installed), not a wrong render.

Broken entries go too, rooted or claimed or not, once older than the grace period: an entry
that is not readable, or names a blob that is missing or of another size (from the
listings), or one whose blob this machine found damaged (a failed pull or `remote verify
--deep`, remembered in .sparkspec/): those blobs are hashed again, and a damaged one is
deleted with its entries. A broken entry is write-once, so until it goes every push of its
key finds it "present" and the render stays a miss for the whole team.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sparkspec.errors import RemoteError
from sparkspec.jsontext import load_json
from sparkspec.remote.claims import Claims
from sparkspec.remote.inventory import gather_bounded, list_all
from sparkspec.remote.layout import BLOBS, blob_path, entry_path, is_digest, parse_sheet_path
from sparkspec.remote.session import Remote
from sparkspec.remote.store import ObjectInfo

DEFAULT_GRACE = timedelta(days=7)


@dataclass
class Sweep:
    roots: int = 0
    kept_entries: int = 0
    kept_blobs: int = 0
    entries: list[str] = field(default_factory=list)  # paths swept (or to sweep, dry run)
    blobs: list[str] = field(default_factory=list)
    sheets: list[str] = field(default_factory=list)
    freed: int = 0
    broken: dict[str, str] = field(default_factory=dict)  # path swept (entry or blob) -> what is wrong
    broken_kept: int = 0  # broken entries younger than the grace period
    partials: list[str] = field(default_factory=list)  # a folder remote's uploads cut short (`<name>#<n>`)
    # Rooted keys whose entry did not read: which blobs it named cannot be told, so no blob
    # that no readable entry names was swept (a push of the render writes the entry again).
    unreadable_rooted: list[str] = field(default_factory=list)


CLAIM_ALIVE = timedelta(days=1)


def _old(modified: datetime | None, cutoff: datetime) -> bool:
    return modified is not None and modified < cutoff


async def collect(remote: Remote, now: datetime, grace: timedelta = DEFAULT_GRACE,
                  dry_run: bool = False) -> Sweep:
    if not remote.writable and not dry_run:  # a dry run only reads: fine in read-only mode
        raise RemoteError(f"remote {remote.display} is read-only here; `sparkspec remote gc` deletes, "
                          "so it needs read-write (`--dry-run` shows what it would delete)")
    store = remote.store
    listing = await list_all(store)
    cutoff = now - grace
    # A claim renewed within the grace period (and at least the last day) may be a render in
    # flight: its entry stays. One written longer ago is a dead machine's (a live one is
    # renewed every ttl/4), and keeps nothing.
    alive = now - max(grace, CLAIM_ALIVE)
    claimed = {key for key, info in (await Claims(store).listed()).items() if not _old(info.modified, alive)}
    report = Sweep(roots=len(listing.roots))
    rooted: set[str] = set()
    sheets: set[str] = set()
    for got in await gather_bounded([store.get(r.path) for r in listing.roots]):
        if got is None:
            continue
        try:
            root = load_json(got[0])
            keys, sheet = root.get("keys", []), root.get("sheet")
        except (ValueError, AttributeError):
            raise RemoteError(f"remote {remote.display}: a root is not readable JSON; gc stops rather "
                              "than sweep what it may protect") from None
        rooted.update(k for k in keys if is_digest(k))
        if is_digest(sheet):
            sheets.add(sheet)
    keep, sweep = [], []
    for (key, signer), info in sorted(listing.entries.items()):
        if key in rooted or key in claimed or not _old(info.modified, cutoff):
            keep.append((key, signer))
        else:
            sweep.append((key, signer, info.size))
    bodies = await gather_bounded([store.get(entry_path(k, s)) for k, s in keep])
    files = {name: entry_files(got[0]) for name, got in zip(keep, bodies) if got is not None}
    damaged = await _damaged_blobs(remote, files, listing.blobs)
    kept_blobs: set[str] = set()
    for name, named in files.items():
        problem = _problem(named, listing.blobs, damaged)
        if problem is None:
            kept_blobs.update(sha for sha, _ in named or ())
        elif _old(listing.entries[name].modified, cutoff):
            keep.remove(name)
            sweep.append((*name, listing.entries[name].size))
            report.broken[entry_path(*name)] = problem
            if named is None and name[0] in rooted:
                report.unreadable_rooted.append(name[0])
        else:
            report.broken_kept += 1
            kept_blobs.update(sha for sha, _ in named or ())
    report.kept_entries = len(keep)
    doomed_blobs = [(sha, info.size) for sha, info in sorted(listing.blobs.items())
                    if (sha in damaged or (sha not in kept_blobs and not report.unreadable_rooted))
                    and _old(info.modified, cutoff)]
    for sha, _ in doomed_blobs:
        if sha in damaged:
            report.broken[f"{BLOBS}/{sha[:2]}/{sha}"] = damaged[sha]
    report.kept_blobs = len(listing.blobs) - len(doomed_blobs)
    report.entries = [entry_path(k, s) for k, s, _ in sweep]
    report.blobs = [f"{BLOBS}/{sha[:2]}/{sha}" for sha, _ in doomed_blobs]
    doomed_sheets = [(path, info.size) for path, info in sorted(listing.sheets.items())
                     if parse_sheet_path(path) not in sheets and _old(info.modified, cutoff)]
    report.sheets = [path for path, _ in doomed_sheets]
    partials = await asyncio.to_thread(_partial_uploads, store.local_root, cutoff) if store.local_root else []
    report.partials = [path for path, _ in partials]
    report.freed = (sum(size for *_, size in sweep) + sum(size for _, size in doomed_blobs)
                    + sum(size for _, size in doomed_sheets) + sum(size for _, size in partials))
    if not dry_run:
        await gather_bounded([store.delete(p) for p in report.entries])
        await gather_bounded([store.delete(p) for p in report.blobs])
        await gather_bounded([store.delete(p) for p in report.sheets])
        if store.local_root is not None:
            await asyncio.to_thread(_delete_partials, store.local_root, report.partials)
        gone = {key for key, _, _ in sweep}
        await asyncio.to_thread(remote.forget_bad, [k for k in remote.bad_keys() if k in gone])
    return report


# How obstore's local folder stages a write: `<name>#<n>` beside it, renamed over it once whole.
# A push killed mid-upload leaves it; listings never show it, so only a walk of the folder finds it.
_PARTIAL = re.compile(r".+#[0-9]+")


def _partial_uploads(root: Path, cutoff: datetime) -> list[tuple[str, int]]:
    """(path under the remote, size) of each staged write older than `cutoff` in a folder remote."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if not _PARTIAL.fullmatch(name):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:
                continue
            if _old(datetime.fromtimestamp(st.st_mtime, timezone.utc), cutoff):
                found.append((path.relative_to(root).as_posix(), st.st_size))
    return sorted(found)


def _delete_partials(root: Path, paths: list[str]) -> None:
    for path in paths:
        (root / path).unlink(missing_ok=True)


Files = tuple[tuple[str, int], ...] | None  # an entry's (blob digest, size) pairs; None: unreadable


def entry_files(data: bytes) -> Files:
    """The blobs an entry names with their sizes, read loosely (any signer)."""
    try:
        render = load_json(data)["render"]
        named = ((render["video_sha256"], render["video_bytes"]),
                 (render["last_frame_sha256"], render["last_frame_bytes"]))
    except (ValueError, KeyError, TypeError):
        return None
    ok = all(is_digest(sha) and isinstance(size, int) and not isinstance(size, bool) for sha, size in named)
    return tuple(named) if ok else None


def _problem(named: Files, blobs: dict[str, ObjectInfo], damaged: dict[str, str]) -> str | None:
    if named is None:
        return "not a readable entry"
    for sha, size in named:
        info = blobs.get(sha)
        if info is None:
            return f"blob {sha[:12]} is missing"
        if info.size != size:
            return f"blob {sha[:12]} has {info.size} bytes, the entry says {size}"
        if sha in damaged:
            return damaged[sha]
    return None


async def _damaged_blobs(remote: Remote, files: dict[tuple[str, str], Files],
                         blobs: dict[str, ObjectInfo]) -> dict[str, str]:
    """Blobs of the entries this machine found broken, hashed again: digest -> what is wrong."""
    suspects = remote.bad_keys()
    wanted = {sha for (key, _), named in files.items() if key in suspects
              for sha, size in named or () if sha in blobs and blobs[sha].size == size}
    if not wanted:
        return {}
    tmp = remote.state_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}

    async def rehash(sha: str) -> None:
        part = tmp / f"{sha}.gc.part"
        try:
            got = await remote.store.download(blob_path(sha), part)
        finally:
            part.unlink(missing_ok=True)
        if got is not None and got[1] != sha:
            found[sha] = f"blob {sha[:12]} is damaged (its bytes hash to {got[1][:12]})"

    await gather_bounded([rehash(sha) for sha in sorted(wanted)], 8)
    return found
