"""`remote status` and `remote verify`: what the lock's renders look like here and on the remote.

Both look only at the renders the lock refers to (and the queued uploads), never the whole
remote (DVC #2373), and ask the remote with one listing per shard. Verify then reads each
entry (decoded and, with a signing key, its signature checked) and checks each blob's size
from the listings; `--deep` downloads every blob and hashes it again (a damaged one makes its
key a miss on this machine, and `remote gc` removes its entry once past the grace period).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from sparkspec.remote.inventory import gather_bounded, present_blobs, present_entries
from sparkspec.remote.layout import blob_path
from sparkspec.remote.session import Remote
from sparkspec.remote.sync import TRANSFERS
from sparkspec.state.cache import Cache
from sparkspec.state.lockfile import Lock

PLACES = ("local_only", "remote_only", "both", "neither")


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0


@dataclass
class Status:
    remote: str
    places: dict[str, Tally] = field(default_factory=lambda: {p: Tally() for p in PLACES})
    queued: int = 0
    root_pending: bool = False  # an apply uploaded and was cut short before registering the lock's root

    def to_json(self) -> dict[str, object]:
        return {"remote": self.remote, "queued": self.queued, "root_pending": self.root_pending,
                "renders": {p: {"count": t.count, "bytes": t.bytes} for p, t in self.places.items()}}


def _wanted(lock: Lock, queued: list[str], cache: Cache) -> dict[str, int]:
    """key -> bytes of its two files, for the lock's renders (every recorded take, as push and
    pull carry them) and the queued uploads."""
    sizes = {t.key: t.video.bytes + t.last_frame.bytes
             for r in lock.scenes.values() for t in r.take_records().values()}
    for key in queued:
        if key not in sizes:
            render = cache.lookup(key)
            sizes[key] = render.video_bytes + render.last_frame_bytes if render else 0
    return sizes


async def status(remote: Remote, lock: Lock, cache: Cache, in_renders: Collection[str] = ()) -> Status:
    """Where each of the lock's renders is. On this machine means in its cache, or (keys in
    `in_renders`) in renders/ as the lock records it, which push takes from. On the remote
    means what a pull can get: both of the lock's files there at their sizes (as plan and pull
    judge it, entry or not); a queued upload the lock does not record is there when its entry is."""
    from sparkspec.remote.transfer import check_format

    await check_format(remote.store)  # a remote of another layout is refused, as verify and push do
    queued = await asyncio.to_thread(remote.queue.keys)
    sizes = await asyncio.to_thread(_wanted, lock, queued, cache)
    files = {t.key: ((t.video.sha256, t.video.bytes), (t.last_frame.sha256, t.last_frame.bytes))
             for r in lock.scenes.values() for t in r.take_records().values()}
    blobs = await present_blobs(remote.store, [sha for pair in files.values() for sha, _ in pair])
    on_remote = await present_entries(remote.store, [k for k in sizes if k not in files], remote.signer)
    report = Status(remote.display, queued=len(queued), root_pending=await asyncio.to_thread(remote.queue.root_pending))
    bad = await asyncio.to_thread(remote.bad_keys)  # found damaged by a pull here: a miss, as plan says
    for key, size in sizes.items():
        here = key in in_renders or await asyncio.to_thread(cache.lookup, key) is not None
        there = key not in bad and (all(sha in blobs and blobs[sha].size == n for sha, n in files[key])
                                    if key in files else key in on_remote)
        place = "both" if here and there else "local_only" if here else "remote_only" if there else "neither"
        report.places[place].count += 1
        report.places[place].bytes += size
    return report


@dataclass
class Verification:
    checked: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    missing: list[str] = field(default_factory=list)  # keys with no entry on the remote
    problems: dict[str, str] = field(default_factory=dict)  # key -> what is wrong ("; " between several)
    rehashed: int = 0  # --deep: blobs downloaded and hashed again
    root_registered: bool | None = None  # the lock's root is on the remote (None: not asked)

    def add(self, key: str, problem: str) -> None:
        """One more thing wrong with `key`'s render: kept beside what was found before."""
        self.problems[key] = f"{self.problems[key]}; {problem}" if key in self.problems else problem


async def verify(remote: Remote, lock: Lock, cache: Cache, tmp_dir: Path, deep: bool = False,
                 root: str | None = None) -> Verification:
    """`root`: the path of the lock's root, looked for (what `remote gc` keeps)."""
    queued = await asyncio.to_thread(remote.queue.keys)
    keys = list(await asyncio.to_thread(_wanted, lock, queued, cache))
    report = Verification()
    if root is not None:
        report.root_registered = await remote.store.head(root) is not None
    present = await present_entries(remote.store, keys, remote.signer)
    report.missing = [k for k in keys if k not in present]
    found = await remote.lookup(list(present), with_claims=False, skip_bad=False)
    for key, why in found.ignored.items():
        report.add(key, f"entry not usable: {why}")
    for key in present:
        if key not in found.hits and key not in found.ignored:
            report.add(key, "entry listed but not readable")
    report.checked = len(found.hits)
    wanted: dict[str, int] = {}
    owners: dict[str, str] = {}
    for key, render in found.hits.items():
        for sha, size in ((render.video_sha256, render.video_bytes),
                          (render.last_frame_sha256, render.last_frame_bytes)):
            wanted[sha] = size
            owners.setdefault(sha, key)
    blobs = await present_blobs(remote.store, list(wanted))
    for sha, size in wanted.items():
        info = blobs.get(sha)
        if info is None:
            report.add(owners[sha], f"blob {sha[:12]} is missing")
        elif info.size != size:
            report.add(owners[sha], f"blob {sha[:12]} has {info.size} bytes, the entry says {size}")
    report.blobs = len(wanted)
    if deep:
        tmp_dir.mkdir(parents=True, exist_ok=True)

        sound: set[str] = set()  # blobs whose bytes hash to their name

        async def rehash(sha: str) -> None:
            part = tmp_dir / f"{sha}.verify.part"
            try:
                got = await remote.store.download(blob_path(sha), part)
            finally:
                part.unlink(missing_ok=True)
            if got is None:
                report.add(owners[sha], f"blob {sha[:12]} is missing")
                return
            report.rehashed += 1
            report.blob_bytes += got[0]
            if got[1] != sha:
                problem = f"blob {sha[:12]} is damaged (its bytes hash to {got[1][:12]})"
                report.add(owners[sha], problem)
                # A miss here, until gc removes it or a push writes the blob again.
                await remote.mark_bad_render(found.hits[owners[sha]], problem)
            else:
                sound.add(sha)

        await gather_bounded([rehash(s) for s in wanted if s in blobs and blobs[s].size == wanted[s]], TRANSFERS)
        # A render found damaged here before whose blobs are sound now (mended by a push
        # elsewhere) is a hit again.
        marked = await asyncio.to_thread(remote.bad_keys)
        await asyncio.to_thread(remote.forget_bad, [
            k for k, r in found.hits.items() if k in marked and k not in report.problems
            and {r.video_sha256, r.last_frame_sha256} <= sound])
    return report
