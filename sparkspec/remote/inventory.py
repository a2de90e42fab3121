"""What a remote holds, from listings: one LIST per shard asked about, never a request per key.

`present_entries` and `present_blobs` answer "which of these are there" for the commands that
survey a remote (`push`, `remote status`, `remote verify`); `list_all` walks the whole remote
for `remote gc`. Names read back are parsed with the layout's validators: anything else is ignored.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import TypeVar

from sparkspec.remote.layout import (BLOBS, RENDERS, ROOTS, SHEETS, entry_prefix, is_digest, parse_entry_path,
                                     parse_sheet_path)
from sparkspec.remote.store import ObjectInfo, Store

CONCURRENCY = 16
T = TypeVar("T")


async def gather_bounded(works: Collection[Awaitable[T]], limit: int = CONCURRENCY) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(work: Awaitable[T]) -> T:
        async with gate:
            return await work

    return list(await asyncio.gather(*(one(w) for w in works)))


def _shards(names: Collection[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for name in dict.fromkeys(names):
        grouped[name[:2]].append(name)
    return grouped


async def present_entries(store: Store, keys: Collection[str], signer: str) -> dict[str, ObjectInfo]:
    """The entries (of `signer`) that exist for `keys`, by listing each shard once."""
    wanted = _shards([k for k in keys if is_digest(k)])

    async def shard(prefix: str, names: set[str]) -> dict[str, ObjectInfo]:
        found: dict[str, ObjectInfo] = {}
        for info in await store.list(entry_prefix(prefix)):
            parsed = parse_entry_path(info.path)
            if parsed is not None and parsed[1] == signer and parsed[0] in names:
                found[parsed[0]] = info
        return found

    merged: dict[str, ObjectInfo] = {}
    for part in await gather_bounded([shard(p, set(n)) for p, n in wanted.items()]):
        merged.update(part)
    return merged


async def present_blobs(store: Store, digests: Collection[str]) -> dict[str, ObjectInfo]:
    """The blobs among `digests` that exist, with their sizes, by listing each shard once."""
    wanted = _shards([d for d in digests if is_digest(d)])

    async def shard(prefix: str, names: set[str]) -> dict[str, ObjectInfo]:
        found = {}
        for info in await store.list(f"{BLOBS}/{prefix}/"):
            name = info.path.rsplit("/", 1)[-1]
            if name in names and info.path == f"{BLOBS}/{name[:2]}/{name}":
                found[name] = info
        return found

    merged: dict[str, ObjectInfo] = {}
    for part in await gather_bounded([shard(p, set(n)) for p, n in wanted.items()]):
        merged.update(part)
    return merged


@dataclass(frozen=True)
class Listing:
    """A whole remote, for gc: entries as (key, signer) -> info, blobs by digest, root paths."""

    entries: dict[tuple[str, str], ObjectInfo]
    blobs: dict[str, ObjectInfo]
    roots: list[ObjectInfo]
    sheets: dict[str, ObjectInfo]  # path -> info (a digest may have a sheet of each signer)


async def list_all(store: Store) -> Listing:
    renders, blobs, roots, sheets = await asyncio.gather(
        store.list(f"{RENDERS}/"), store.list(f"{BLOBS}/"), store.list(f"{ROOTS}/"), store.list(f"{SHEETS}/"))
    entries = {}
    for info in renders:
        parsed = parse_entry_path(info.path)
        if parsed is not None:
            entries[parsed] = info
    found = {}
    for info in blobs:
        name = info.path.rsplit("/", 1)[-1]
        if is_digest(name) and info.path == f"{BLOBS}/{name[:2]}/{name}":
            found[name] = info
    return Listing(entries, found, [r for r in roots if r.path.endswith(".json")],
                   {s.path: s for s in sheets if parse_sheet_path(s.path) is not None})

