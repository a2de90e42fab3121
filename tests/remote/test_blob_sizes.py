"""`index.blob_sizes`: the sizes a plan checks a hit's blobs against, by whichever listing is cheap."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest

from sparkspec.remote.index import blob_sizes
from sparkspec.remote.layout import blob_path
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store


def store() -> Store:
    return open_store(RemoteSettings(f"memory://sizes-{secrets.token_hex(6)}"), {})


def put_blobs(target: Store, count: int) -> dict[str, int]:
    sizes = {}

    async def put_all() -> None:
        for n in range(count):
            data = n.to_bytes(4, "big") * (1 + n % 7)
            sha = hashlib.sha256(data).hexdigest()
            await target.put(blob_path(sha), data)
            sizes[sha] = len(data)

    asyncio.run(put_all())
    return sizes


def fake_digest(n: int) -> str:
    return hashlib.sha256(f"absent {n}".encode()).hexdigest()


@pytest.mark.parametrize("held, asked", [(40, 3), (300, 120), (1500, 5)],
                         ids=["a HEAD a shard", "one listing of every blob", "past a page: a listing a shard"])
def test_blob_sizes_names_the_blobs_held_and_their_sizes(held: int, asked: int) -> None:
    target = store()
    sizes = put_blobs(target, held)
    wanted = list(sizes)[:asked] + [fake_digest(n) for n in range(asked)]
    found = asyncio.run(blob_sizes(target, wanted))
    assert found == {sha: sizes[sha] for sha in list(sizes)[:asked]}


def test_a_blob_cut_short_is_listed_at_its_size() -> None:
    target = store()
    sizes = put_blobs(target, 20)
    sha = next(iter(sizes))
    asyncio.run(target.put(blob_path(sha), b"cut"))
    assert asyncio.run(blob_sizes(target, list(sizes)))[sha] == 3
    assert asyncio.run(blob_sizes(target, [])) == {}
