"""Which of many keys the remote has: a listing per prefix page, not a request per key.

Keys are grouped by their two-hex-digit shard. A shard asked for one key costs one GET of
that entry (a 404 is the miss); a shard asked for more is listed once (1,000 names a page)
and only the entries present are fetched. Asked about many shards (WHOLE_FROM or more), it
first lists every entry at once: a team's remote of up to 1,000 entries answers in one
request, not one a shard (a clone's 100 scenes asked 86); a remote with more than a page of
entries costs the listing's first two requests more (the second is how the store tells there is
more), and is then listed shard by shard. A key the caller already `known`s (the lock in git
records its render: both blobs' digests and sizes) is not fetched when the listing shows
its entry: the lock's render is the hit, its blobs are checked against the lock's digests
when pulled, and `Lookup.unread` names it so a pull that finds those blobs gone reads the
entry after all. A known key with no usable entry (none under this machine's signer, or one
it cannot read) is a hit too when HEADs find both its blobs at their sizes. Claims are listed once for the whole remote (they are few: the renders in
flight), and read only for keys that missed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sparkspec.remote.claims import Claim, Claims
from sparkspec.remote.entries import decode_entry
from sparkspec.remote.layout import RENDERS, blob_path, entry_path, entry_prefix, parse_entry_path
from sparkspec.remote.store import Store
from sparkspec.state.cache import CachedRender

CONCURRENCY = 32
WHOLE_FROM = 8  # shards asked about: from this many, one listing of every entry is tried first
T = TypeVar("T")


@dataclass
class Lookup:
    hits: dict[str, CachedRender] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)  # misses that another machine renders now
    abandoned: dict[str, Claim] = field(default_factory=dict)  # misses claimed by a crashed apply here
    ignored: dict[str, str] = field(default_factory=dict)  # key -> why its entry was not usable
    unread: set[str] = field(default_factory=set)  # hits taken from `known`: their entry is listed, not read


async def lookup(store: Store, keys: Collection[str], signing_key: bytes | None, signer: str, *,
                 with_claims: bool = True, owner: str | None = None,
                 known: Mapping[str, CachedRender] | None = None) -> Lookup:
    """The entries (and, for misses, live claims) of `keys`. Raises RemoteError."""
    known = known or {}
    found = Lookup()
    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(work: Awaitable[T]) -> T:
        async with limit:
            return await work

    shards: dict[str, list[str]] = defaultdict(list)
    for key in dict.fromkeys(keys):
        shards[key[:2]].append(key)

    async def present(shard: str, wanted: list[str]) -> list[str]:
        if len(wanted) == 1:
            return wanted
        names = await _signed_names(store, entry_prefix(shard), signer)
        assert names is not None
        return [k for k in wanted if k in names]

    async def fetch(key: str, listed: bool) -> None:
        if listed and key in known:
            found.hits[key] = known[key]
            found.unread.add(key)
            return
        got = await store.get(entry_path(key, signer))
        if got is None:
            return
        render = decode_entry(got[0], key, signing_key)
        if isinstance(render, str):
            found.ignored[key] = render
        else:
            found.hits[key] = render

    every = await _signed_names(store, f"{RENDERS}/", signer, pages=1) if len(shards) >= WHOLE_FROM else None
    if every is not None:
        listed = [[k for k in w if k in every] for w in shards.values()]
    else:
        listed = await asyncio.gather(*(bounded(present(s, w)) for s, w in shards.items()))
    await asyncio.gather(*(bounded(fetch(k, every is not None or len(w) > 1))
                           for ks, w in zip(listed, shards.values()) for k in ks))
    # A render the lock records whose entry this machine cannot use (none under its signer: a
    # teammate's signed entries read without the key, a push cut short after its blobs; or one
    # that is damaged) is still the team's render when its blobs are there: the lock names them
    # by sha256, and a pull checks every byte against it (as `sparkspec pull` does).
    by_lock = [k for k in dict.fromkeys(keys) if k not in found.hits and k in known]
    for key, there in zip(by_lock, await asyncio.gather(*(bounded(_blobs_there(store, known[k]))
                                                          for k in by_lock))):
        if there:
            found.hits[key] = known[key]
            found.unread.add(key)
    misses = [k for k in dict.fromkeys(keys) if k not in found.hits]
    if with_claims and misses:
        claims = Claims(store)
        claimed = await claims.live_keys()
        wanted = [k for k in misses if k in claimed]
        seen = await asyncio.gather(*(bounded(claims.read(k)) for k in wanted))
        for key, state in zip(wanted, seen):
            if state is not None and state.claim is not None and state.claim.owner != owner:
                if state.claim.abandoned():  # its holder ran here and is gone: apply takes it over
                    found.abandoned[key] = state.claim
                else:
                    found.claims[key] = state.claim
    return found


async def _blobs_there(store: Store, render: CachedRender) -> bool:
    """Both of `render`'s blobs are on the remote at their sizes (two HEADs)."""
    for sha, size in ((render.video_sha256, render.video_bytes), (render.last_frame_sha256, render.last_frame_bytes)):
        info = await store.head(blob_path(sha))
        if info is None or info.size != size:
            return False
    return True


async def _signed_names(store: Store, prefix: str, signer: str, pages: int | None = None) -> set[str] | None:
    """The keys of `signer`'s entries listed under `prefix`; None when the listing runs past
    `pages` pages (the caller then asks shard by shard)."""
    names: set[str] = set()
    seen = 0
    async for page in store.list_pages(prefix):
        seen += 1
        if pages is not None and seen > pages:
            return None
        for info in page:
            parsed = parse_entry_path(info.path)
            if parsed is not None and parsed[1] == signer:
                names.add(parsed[0])
    return names
