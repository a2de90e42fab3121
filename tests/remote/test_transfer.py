"""Push and pull of one render: commit order, verification, signatures, lookups."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from sparkspec.remote import layout
from sparkspec.remote.entries import decode_entry, encode_entry
from sparkspec.remote.index import lookup
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store
from sparkspec.remote.transfer import BlobProblem, pull_render, push_render
from sparkspec.state.cache import Cache, CachedRender


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def cached_render(cache: Cache, tmp: Path, key: str | None = None) -> CachedRender:
    video, frame = secrets.token_bytes(5000), secrets.token_bytes(300)
    shas = []
    for data in (video, frame):
        sha = hashlib.sha256(data).hexdigest()
        part = tmp / f"{sha}.part"
        part.write_bytes(data)
        cache.put_blob(part, sha)
        shas.append(sha)
    render = CachedRender(key=key or secrets.token_hex(32), provider="local", model="m", task_id="t1", seed=7,
                          tokens=100, video_sha256=shas[0], video_bytes=len(video), last_frame_sha256=shas[1],
                          last_frame_bytes=len(frame), inputs={"prompt": "a cat"})
    cache.record(render)
    return render


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(RemoteSettings(f"file://{tmp_path}/remote"), {})


def test_push_then_pull_into_an_empty_cache(store: Store, tmp_path: Path) -> None:
    here, there = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    render = cached_render(here, tmp_path)
    assert run(push_render(store, render, here, None, "unsigned")) is True
    assert run(push_render(store, render, here, None, "unsigned")) is False  # write-once: already there
    found = run(lookup(store, [render.key, secrets.token_hex(32)], None, "unsigned"))
    assert found.hits == {render.key: render}
    run(pull_render(store, render, there, tmp_path / "tmp"))
    assert there.lookup(render.key) == render
    assert there.blob_path(render.video_sha256).read_bytes() == here.blob_path(render.video_sha256).read_bytes()


def test_a_damaged_remote_blob_is_never_installed(store: Store, tmp_path: Path) -> None:
    here, there = Cache(tmp_path / "a"), Cache(tmp_path / "b")
    render = cached_render(here, tmp_path)
    run(push_render(store, render, here, None, "unsigned"))
    blob = tmp_path / "remote" / "v1" / layout.blob_path(render.video_sha256)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobProblem, match="damaged"):
        run(pull_render(store, render, there, tmp_path / "tmp"))
    assert there.lookup(render.key) is None and not there.has_blob(render.video_sha256)
    blob.unlink()
    with pytest.raises(BlobProblem, match="missing"):
        run(pull_render(store, render, there, tmp_path / "tmp"))
    assert list((tmp_path / "tmp").iterdir()) == []  # no temp file left behind


def test_a_damaged_local_blob_is_never_pushed(store: Store, tmp_path: Path) -> None:
    here = Cache(tmp_path / "a")
    render = cached_render(here, tmp_path)
    here.blob_path(render.video_sha256).write_bytes(b"x" * render.video_bytes)
    with pytest.raises(Exception, match="damaged"):
        run(push_render(store, render, here, None, "unsigned"))
    assert run(store.list("renders/")) == []  # no entry without its blobs


def test_signed_entries_ignore_unsigned_and_foreign_ones(store: Store, tmp_path: Path) -> None:
    here = Cache(tmp_path / "a")
    render = cached_render(here, tmp_path)
    team, fork = b"team-signing-key", b"someone-else"
    team_signer = RemoteSettings("memory://x", signing_key=team).signer
    run(push_render(store, render, here, None, "unsigned"))  # e.g. from a fork's CI
    assert run(lookup(store, [render.key], team, team_signer)).hits == {}
    run(push_render(store, render, here, team, team_signer))
    assert run(lookup(store, [render.key], team, team_signer)).hits == {render.key: render}
    signed = encode_entry(render, team)
    assert decode_entry(signed, render.key, team) == render
    assert decode_entry(signed, render.key, fork) == "signed by another key"
    tampered = signed.replace(b'"tokens":100', b'"tokens":1')
    assert decode_entry(tampered, render.key, team) == "its signature does not match"
    assert decode_entry(signed, "0" * 64, team) == "it names another key"
    # Why an entry is ignored, in its own terms (a malformed unsigned one was called "signed").
    unsigned = encode_entry(render, None)
    assert decode_entry(unsigned, render.key, team) == \
        "unsigned, and SPARKSPEC_REMOTE_SIGNING_KEY is set here (unsigned entries are ignored)"
    assert decode_entry(signed, render.key, None) == "signed, and no SPARKSPEC_REMOTE_SIGNING_KEY here"
    assert decode_entry(b'{"format":1,"render":{"key":"k","video_sha256":null}}', "k", None) == "it names no signer"


@pytest.mark.parametrize("body", [b"not json", b'{"format":1,"signer":"unsigned","render":{"key":"k"}}',
                                  b'{"format":2}'])
def test_hostile_entries_are_reasons_not_renders(body: bytes) -> None:
    assert isinstance(decode_entry(body, "k" * 64, None), str)


@pytest.mark.parametrize("field", ["provider", "model", "task_id"])
def test_an_entry_whose_text_carries_control_characters_is_a_reason(tmp_path: Path, field: str) -> None:
    """provider, model and task id go from an entry into the cache and the lock, and are
    printed: a writer's escape sequences must not reach a teammate's terminal."""
    render = cached_render(Cache(tmp_path / "a"), tmp_path)
    hostile = encode_entry(dataclasses.replace(render, **{field: "t1\x1b]0;pwned\x07"}), None)
    assert decode_entry(hostile, render.key, None) == f"{field} is not printable text"
    assert decode_entry(encode_entry(render, None), render.key, None) == render


def test_lookup_lists_a_shard_asked_for_several_keys(store: Store, tmp_path: Path) -> None:
    here = Cache(tmp_path / "a")
    keys = ["ab" + secrets.token_hex(31) for _ in range(5)]
    renders = [cached_render(here, tmp_path, key) for key in keys[:3]]
    for render in renders:
        run(push_render(store, render, here, None, "unsigned"))
    calls: list[str] = []
    real_get = store.get

    async def counting_get(path: str) -> Any:
        calls.append(path)
        return await real_get(path)

    store.get = counting_get  # type: ignore[method-assign]
    found = run(lookup(store, keys, None, "unsigned", with_claims=False))
    assert set(found.hits) == set(keys[:3])
    assert len([c for c in calls if c.startswith("renders/")]) == 3  # only the present entries
