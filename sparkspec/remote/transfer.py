"""Moving one render between the local cache and a remote, in the order that keeps both honest.

Push: each blob (unless the remote has it at the right size) is read, checked against its
sha256, and uploaded with that checksum; then a HEAD confirms both blobs are there at the
right size; only then is the write-once entry created. The entry is the commit point: no
entry ever points at a blob that was not verified present (DVC #4343, Bazel #22822).

Pull: each blob streams to a temporary file, hashed while it arrives; its length and sha256
must match the entry, else nothing is installed. Then the blob moves into
the local cache (a rename), then the entry is recorded there; renders/ may then share the
blob's inode (`Cache.fresh_pull`), so a pulled file is written to disk once. A pulled file
is not fsync'd on its own: it can be fetched again for free, and the lock writer flushes the
filesystem once before a lock write that names it (`state.unsynced`). The cache index may name
it before that: after a power cut a blob cut short fails the cache's own check (size, sha256)
and is pulled again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import Collection
from pathlib import Path

from sparkspec.errors import RemoteError
from sparkspec.jsontext import load_json
from sparkspec.remote.entries import encode_entry
from sparkspec.remote.layout import FORMAT, LAYOUT_VERSION, blob_path, entry_path
from sparkspec.remote.store import Store
from sparkspec.state.cache import Cache, CachedRender


class BlobProblem(RemoteError):
    """An entry's blob is missing or damaged on the remote: the entry is a miss."""


def _blobs(render: CachedRender) -> tuple[tuple[str, int], tuple[str, int]]:
    return (render.video_sha256, render.video_bytes), (render.last_frame_sha256, render.last_frame_bytes)


def same_blobs(one: CachedRender, other: CachedRender) -> bool:
    return _blobs(one) == _blobs(other)


async def push_render(store: Store, render: CachedRender, cache: Cache, signing_key: bytes | None,
                      signer: str) -> bool:
    """Upload `render` (already in the local cache). True if this call created the entry,
    False if the remote had it already. Raises RemoteError (the caller queues the push)."""
    path = entry_path(render.key, signer)
    if await store.head(path) is not None:
        return False
    await ensure_format(store)  # before any write: a remote of another layout is not written to
    await upload_blobs(store, render, cache)
    return await store.create(path, encode_entry(render, signing_key)) is not None


async def absent_blobs(store: Store, render: CachedRender) -> list[str]:
    """The digests of `render`'s blobs that the remote lacks or holds at another size (HEADs)."""
    gone = []
    for sha, size in _blobs(render):
        present = await store.head(blob_path(sha))
        if present is None or present.size != size:
            gone.append(sha)
    return gone


async def upload_blobs(store: Store, render: CachedRender, cache: Cache, gone: Collection[str] | None = None) -> int:
    """`render`'s blobs (already in the local cache) that the remote lacks or holds at another
    size (`gone`, when the caller knows, a damaged one among them; else asked with HEADs) are
    read back, checked against their sha256 and uploaded; then a HEAD confirms both are there
    at their size, before anything may name them. The bytes uploaded; RemoteError when the
    store fails, a cached copy is damaged, or a blob is not there after its upload."""
    if gone is None:
        gone = await absent_blobs(store, render)
    sent = 0
    for sha, size in _blobs(render):
        if sha in gone:
            data = await asyncio.to_thread(_read_verified, cache.blob_path(sha), sha, size)
            etag = await store.put(blob_path(sha), data)
            await check_upload(store, blob_path(sha), sha, data, etag)
            sent += size
    missing = await absent_blobs(store, render)
    if missing:
        raise RemoteError(f"remote {store.display}: blob {missing[0][:12]} is not there after its upload; "
                          "nothing was made to name it")
    return sent


async def check_upload(store: Store, path: str, sha: str, data: bytes, etag: str | None) -> None:
    """The store holds the bytes sent. A store that enforces the sha256 checksum header refuses
    a body damaged in transit; one that ignores it (moto; some gateways) would keep it, and the
    HEAD after the uploads checks only sizes. Where the ETag of a plain upload is the body's MD5
    (S3's, and most S3-compatible stores') it must be this body's; one that differs is read back
    once and hashed: equal, the store's ETags are not MD5s (encrypted with a KMS key, say) and
    are not compared again; not equal, the upload failed (RemoteError: queued, sent again)."""
    tag = (etag or "").strip('"').lower()
    if store.md5_etags is False or re.fullmatch(r"[0-9a-f]{32}", tag) is None:
        return
    if hashlib.md5(data, usedforsecurity=False).hexdigest() == tag:
        store.md5_etags = True
        return
    got = await store.get(path)
    if got is not None and hashlib.sha256(got[0]).hexdigest() == sha:
        store.md5_etags = False
        return
    raise RemoteError(f"remote {store.display}: blob {sha[:12]} arrived damaged (the store holds other bytes "
                      "than were sent, and ignored their sha256 checksum); nothing was made to name it")


def _read_verified(path: Path, sha: str, size: int) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RemoteError(f"{path}: cannot read the cached file to upload: {exc.strerror}") from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
        raise RemoteError(f"{path}: the cached file is damaged; not uploading it "
                          "(`sparkspec gc` and a new apply repair the cache)")
    return data


async def ensure_format(store: Store) -> None:
    """format.json names the layout; written once by the first machine that pushes. One that
    is there already must name our layout (RemoteError otherwise), as for a read."""
    if not store.format_known:
        if await store.create(FORMAT, json.dumps({"layout": LAYOUT_VERSION}).encode()) is None:
            await check_format(store)
        store.format_known = True


async def check_format(store: Store) -> None:
    """RemoteError unless the remote is of our layout (or has no format.json yet): a remote of
    another layout is neither read nor written, by any command, for the whole run."""
    if store.format_known:
        return
    if store.format_refused is not None:
        raise RemoteError(store.format_refused)
    found = await store.get(FORMAT)
    if found is None:
        return
    try:
        layout = load_json(found[0]).get("layout")
    except (ValueError, AttributeError):
        layout = None
    if layout is None:
        store.format_refused = (f"remote {store.display}: its format.json names no layout, so it was not written "
                                "by sparkspec; point the remote at a folder or prefix of its own")
    elif layout != LAYOUT_VERSION:
        store.format_refused = (f"remote {store.display}: its format.json names layout {layout!r}; this "
                                f"sparkspec reads layout {LAYOUT_VERSION}")
    if store.format_refused is not None:
        raise RemoteError(store.format_refused)
    store.format_known = True


async def pull_render(store: Store, render: CachedRender, cache: Cache, tmp_dir: Path, *,
                      record: bool = True) -> None:
    """Download `render`'s blobs into the local cache (verified), then record it there (unless
    `record` is false: the caller indexes its pulls in a batch, once they are flushed).
    Raises BlobProblem for a missing or damaged blob, RemoteError for a failed request.
    Every step runs on one of the store's threads, one hop from the event loop a render."""
    await store.run(_pull_render_now, store, render, cache, tmp_dir, record)


def _pull_render_now(store: Store, render: CachedRender, cache: Cache, tmp_dir: Path, record: bool) -> None:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    for sha, size in _blobs(render):
        if cache.has_blob(sha, size):
            continue
        part = tmp_dir / f"{sha}.{secrets.token_hex(4)}.remote.part"
        try:
            got = store.download_now(blob_path(sha), part)  # flushed before a lock write names it
            if got is None:
                raise BlobProblem(f"remote {store.display}: entry {render.key[:12]} points at blob "
                                  f"{sha[:12]}, which is missing; treated as not cached")
            if got != (size, sha):
                raise BlobProblem(f"remote {store.display}: blob {sha[:12]} is damaged ({got[0]} bytes, "
                                  f"sha256 {got[1][:12]}); not installed, treated as not cached")
            cache.put_blob(part, sha, pulled=True)
        finally:
            part.unlink(missing_ok=True)
    if record:
        cache.record(render)
