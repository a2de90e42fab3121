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

With `check_blobs` (a plan), a hit is also checked against the blobs the store lists: an
entry whose video or last frame is missing, or listed at another size (an upload cut short,
a blob evicted), is a miss with its reason in `ignored`, so the plan renders the scene instead
of promising a pull that would fail. A render the lock records whose own blobs are gone is
checked against its entry first (another machine's render may have won the write-once entry).
Blobs are listed the way entries are: all at once while that is a few pages, else a shard at
a time, a lone blob by HEAD. A blob damaged at its right size shows only when pulled (its
sha256 is checked then, and the key marked bad).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from sparkspec.remote.claims import Claim, Claims
from sparkspec.remote.entries import decode_entry
from sparkspec.remote.layout import BLOBS, RENDERS, blob_path, entry_path, entry_prefix, parse_entry_path
from sparkspec.remote.store import Store
from sparkspec.remote.transfer import same_blobs
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
                 known: Mapping[str, CachedRender] | None = None, check_blobs: bool = False) -> Lookup:
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
    # by sha256, and a pull checks every byte against it (as `sparkspec pull` does). So is one
    # whose entry names another render of the key (write-once: the first; the lock's is a
    # --replace re-roll whose files a push shared): the lock's, when its blobs are there.
    others = [k for k, r in found.hits.items() if k in known and k not in found.unread and not same_blobs(r, known[k])]
    for key, there in zip(others, await asyncio.gather(*(bounded(blobs_there(store, known[k])) for k in others))):
        if there:
            found.hits[key] = known[key]
            found.unread.add(key)
    by_lock = [k for k in dict.fromkeys(keys) if k not in found.hits and k in known]
    for key, there in zip(by_lock, await asyncio.gather(*(bounded(blobs_there(store, known[k]))
                                                          for k in by_lock))):
        if there:
            found.hits[key] = known[key]
            found.unread.add(key)
    if check_blobs:
        headed = set(by_lock)
        await _drop_missing_blobs(store, found, {k: r for k, r in found.hits.items() if k not in headed},
                                  signing_key, signer)
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


def _blobs(render: CachedRender) -> tuple[tuple[str, str, int], ...]:
    return (("video", render.video_sha256, render.video_bytes),
            ("last frame", render.last_frame_sha256, render.last_frame_bytes))


def _blob_problem(render: CachedRender, sizes: Mapping[str, int]) -> str | None:
    """Why `render` cannot be pulled, by the sizes the store lists; None when it can."""
    for what, sha, size in _blobs(render):
        if sha not in sizes:
            return f"its {what} (blob {sha[:12]}) is missing on the remote"
        if sizes[sha] != size:
            return f"its {what} (blob {sha[:12]}) has {sizes[sha]} bytes on the remote, the entry says {size}"
    return None


async def _drop_missing_blobs(store: Store, found: Lookup, hits: Mapping[str, CachedRender],
                              signing_key: bytes | None, signer: str) -> None:
    """Turn the `hits` whose blobs the store does not hold at their sizes into misses."""
    sizes = await blob_sizes(store, {sha for r in hits.values() for _, sha, _ in _blobs(r)})
    broken = {k: why for k, r in hits.items() if (why := _blob_problem(r, sizes)) is not None}
    for key in broken:
        del found.hits[key]

    gate = asyncio.Semaphore(CONCURRENCY)

    async def entry_instead(key: str) -> CachedRender | None:
        """A lock's render whose blobs are gone: the entry's render, when it differs and is whole."""
        async with gate:
            got = await store.get(entry_path(key, signer))
        entry = decode_entry(got[0], key, signing_key) if got is not None else None
        if not isinstance(entry, CachedRender) or same_blobs(entry, hits[key]):
            return None
        return entry if await blobs_there(store, entry) else None

    from_lock = [k for k in broken if k in found.unread]
    for key, entry in zip(from_lock, await asyncio.gather(*(entry_instead(k) for k in from_lock))):
        found.unread.discard(key)
        if entry is not None:
            found.hits[key] = entry
            del broken[key]
    found.ignored.update(broken)


async def blob_sizes(store: Store, digests: Collection[str]) -> dict[str, int]:
    """The sizes of the blobs among `digests` that the store holds: one listing of every blob
    while that takes at most a page per WHOLE_FROM shards asked about, else a listing per
    shard (a HEAD for a shard asked about one blob)."""
    shards: dict[str, list[str]] = defaultdict(list)
    for sha in dict.fromkeys(digests):
        shards[sha[:2]].append(sha)
    if not shards:
        return {}
    if len(shards) >= WHOLE_FROM:
        every = await _listed_sizes(store, f"{BLOBS}/", pages=len(shards) // WHOLE_FROM)
        if every is not None:
            return {sha: every[sha] for shas in shards.values() for sha in shas if sha in every}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def shard(prefix: str, wanted: list[str]) -> dict[str, int]:
        async with gate:
            if len(wanted) == 1:
                info = await store.head(blob_path(wanted[0]))
                return {} if info is None else {wanted[0]: info.size}
            listed = await _listed_sizes(store, f"{BLOBS}/{prefix}/")
            assert listed is not None
            return {sha: listed[sha] for sha in wanted if sha in listed}

    sizes: dict[str, int] = {}
    for part in await asyncio.gather(*(shard(p, w) for p, w in shards.items())):
        sizes.update(part)
    return sizes


async def _listed_sizes(store: Store, prefix: str, pages: int | None = None) -> dict[str, int] | None:
    """Digest -> size of the blobs listed under `prefix`; None past `pages` pages."""

    def digest(path: str) -> str | None:
        name = path.rsplit("/", 1)[-1]
        return name if path == f"{BLOBS}/{name[:2]}/{name}" else None

    return await _listed(store, prefix, digest, pages)


async def blobs_there(store: Store, render: CachedRender) -> bool:
    """Both of `render`'s blobs are on the remote at their sizes (two HEADs)."""
    for _, sha, size in _blobs(render):
        info = await store.head(blob_path(sha))
        if info is None or info.size != size:
            return False
    return True


async def _signed_names(store: Store, prefix: str, signer: str, pages: int | None = None) -> set[str] | None:
    """The keys of `signer`'s entries listed under `prefix`; None when the listing runs past
    `pages` pages (the caller then asks shard by shard)."""

    def key(path: str) -> str | None:
        parsed = parse_entry_path(path)
        return parsed[0] if parsed is not None and parsed[1] == signer else None

    found = await _listed(store, prefix, key, pages)
    return None if found is None else set(found)


async def _listed(store: Store, prefix: str, name_of: Callable[[str], str | None],
                  pages: int | None) -> dict[str, int] | None:
    """Name -> size of what is listed under `prefix` (named by `name_of` its path, None: not
    ours); None when the listing runs past `pages` pages."""
    found: dict[str, int] = {}
    seen = 0
    async for page in store.list_pages(prefix):
        seen += 1
        if pages is not None and seen > pages:
            return None
        for info in page:
            if (name := name_of(info.path)) is not None:
                found[name] = info.size
    return found
