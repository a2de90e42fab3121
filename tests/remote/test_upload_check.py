"""An upload the store got damaged is never named by an entry, even on a store that ignores the
sha256 checksum header (moto does): the ETag of a plain upload is its MD5 on S3 and most
S3-compatible stores, so one that is not this body's is read back and hashed."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from sparkspec.errors import RemoteError
from sparkspec.remote.transfer import check_upload

BODY = b"a clip's bytes " * 1000
SHA = hashlib.sha256(BODY).hexdigest()


class Store:
    """What check_upload asks of a store: its name, what it keeps at a path, its ETag habit."""

    display = "s3://team/film"

    def __init__(self, kept: bytes) -> None:
        self.kept = kept
        self.md5_etags: bool | None = None
        self.reads = 0

    async def get(self, path: str) -> tuple[bytes, Any] | None:
        self.reads += 1
        return self.kept, None


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_a_body_damaged_in_transit_is_refused() -> None:
    damaged = BODY[:500] + b"X" + BODY[501:]
    store = Store(damaged)
    with pytest.raises(RemoteError, match=f"blob {SHA[:12]} arrived damaged"):
        asyncio.run(check_upload(store, "blobs/x", SHA, BODY, f'"{md5(damaged)}"'))  # type: ignore[arg-type]


def test_a_sound_upload_is_checked_by_its_etag_alone() -> None:
    store = Store(b"")
    asyncio.run(check_upload(store, "blobs/x", SHA, BODY, f'"{md5(BODY)}"'))  # type: ignore[arg-type]
    assert store.reads == 0 and store.md5_etags is True


def test_a_store_whose_etags_are_no_md5s_is_read_back_once_then_trusted_to_its_checksum() -> None:
    """SSE-KMS objects on S3 have 32-hex ETags that are not the MD5: not an error."""
    store = Store(BODY)
    asyncio.run(check_upload(store, "blobs/x", SHA, BODY, '"0123456789abcdef0123456789abcdef"'))  # type: ignore[arg-type]
    assert store.reads == 1 and store.md5_etags is False
    asyncio.run(check_upload(store, "blobs/y", SHA, BODY, '"fedcba9876543210fedcba9876543210"'))  # type: ignore[arg-type]
    assert store.reads == 1


@pytest.mark.parametrize("etag", [None, "", "1e4c0d-61a8b2f0c3d40-3e8", "3", '"9b2cf535f27731c974343645a3985328-2"'])
def test_etags_that_are_not_an_md5_are_not_compared(etag: str | None) -> None:
    store = Store(b"")
    asyncio.run(check_upload(store, "blobs/x", SHA, BODY, etag))  # type: ignore[arg-type]
    assert store.reads == 0 and store.md5_etags is None
