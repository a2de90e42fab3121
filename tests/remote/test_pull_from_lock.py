"""A clone's plan asks the remote only what the lock does not already say: where a shard's
listing shows the entry of a render the lock records, the lock's record stands in for it
(its blobs are checked against the lock's digests when pulled), and a pulled file is written
once (renders/ shares the cached blob's inode). Against a real S3 server (moto on 127.0.0.1)
behind a request-counting proxy, and a shared folder."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path

import pytest

from applied import cached_render
from flaky_proxy import LoopbackProxy
from s3server import MotoServer
from sparkspec.apply.outputs import materialize
from sparkspec.remote.session import Remote, open_remote
from sparkspec.remote.transfer import BlobProblem, push_render
from sparkspec.state.cache import Cache


def key_in(shard: str) -> str:
    return shard + secrets.token_hex(31)


def s3_remote(server: MotoServer, url: str, endpoint: str, state: Path) -> Remote:
    env = dict(server.env(), SPARKSPEC_REMOTE=url, AWS_ENDPOINT_URL_S3=endpoint)
    remote = open_remote(None, state, env)
    assert remote is not None
    return remote


def test_a_listed_entry_the_lock_records_is_not_read(moto_server: MotoServer, tmp_path: Path) -> None:
    url = moto_server.bucket()
    here = Cache(tmp_path / "here")
    listed = [cached_render(here, tmp_path, key_in("ab")) for _ in range(4)]  # one shard: listed once
    alone = cached_render(here, tmp_path, key_in("cd"))  # alone in its shard: one GET, listing or not
    writer = s3_remote(moto_server, url, moto_server.endpoint, tmp_path / "a")
    for render in [*listed, alone]:
        asyncio.run(push_render(writer.store, render, here, None, "unsigned"))
    absent = key_in("ab")  # in the lock, never pushed

    proxy = LoopbackProxy(int(moto_server.endpoint.rsplit(":", 1)[1])).start()
    try:
        reader = s3_remote(moto_server, url, proxy.endpoint, tmp_path / "b")
        lock = {r.key: r for r in [*listed, alone]}
        lock[absent] = replace(listed[0], key=absent, video_sha256="0" * 64)  # its video is not there either
        found = asyncio.run(reader.lookup(list(lock), known=lock, with_claims=False))
        asked = dict(proxy.requests)
    finally:
        proxy.stop()
    assert found.hits == {r.key: r for r in [*listed, alone]}
    assert found.unread == {r.key for r in listed}  # `alone`'s entry was read: it came with its GET
    assert reader.unread == found.unread
    # format.json, one listing of shard ab, one GET of alone's entry; no GET for the listed four;
    # a HEAD of the video of the key with no entry (its blobs would make it a hit: the lock's render).
    assert asked == {"GET": 3, "HEAD": 1}, asked

    proxy = LoopbackProxy(int(moto_server.endpoint.rsplit(":", 1)[1])).start()
    try:
        plain = s3_remote(moto_server, url, proxy.endpoint, tmp_path / "c")
        again = asyncio.run(plain.lookup(list(lock), with_claims=False))
        without = dict(proxy.requests)
    finally:
        proxy.stop()
    assert again.hits == found.hits and not again.unread
    assert without == {"GET": 7}, without  # the same, plus the four entries read


@pytest.mark.slow  # over 0.7 s: the default run stays under 90 s on a fresh clone
def test_keys_in_many_shards_are_found_with_one_listing_of_every_entry(moto_server: MotoServer, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone of 12 scenes in 12 shards asks one listing, not 12 requests; a remote with
    more entries than a listing page then costs one request more, and is asked shard by shard."""
    url = moto_server.bucket()
    here = Cache(tmp_path / "here")
    renders = [cached_render(here, tmp_path, key_in(f"{i:02x}")) for i in range(12)]
    writer = s3_remote(moto_server, url, moto_server.endpoint, tmp_path / "a")
    for render in renders:
        asyncio.run(push_render(writer.store, render, here, None, "unsigned"))
    lock = {r.key: r for r in renders}
    absent = key_in("0a")  # in the lock, never pushed (nor its video): a miss after one HEAD
    lock[absent] = replace(renders[0], key=absent, video_sha256="0" * 64)

    def ask(state: Path) -> tuple[set[str], dict[str, int]]:
        proxy = LoopbackProxy(int(moto_server.endpoint.rsplit(":", 1)[1])).start()
        try:
            reader = s3_remote(moto_server, url, proxy.endpoint, state)
            found = asyncio.run(reader.lookup(list(lock), known=lock, with_claims=False))
            return set(found.hits), dict(proxy.requests)
        finally:
            proxy.stop()

    hits, asked = ask(tmp_path / "b")
    assert hits == {r.key for r in renders}
    assert asked == {"GET": 2, "HEAD": 1}, asked  # format.json and one listing; absent's video
    import sparkspec.remote.store as store_module

    real_list = store_module.Store.list_pages

    async def small_pages(self: store_module.Store, prefix: str):  # type: ignore[no-untyped-def]
        async for page in real_list(self, prefix):
            for at in range(0, len(page), 5):  # as if the store's pages held 5 names
                yield page[at:at + 5]

    monkeypatch.setattr(store_module.Store, "list_pages", small_pages)
    hits, asked = ask(tmp_path / "c")
    assert hits == {r.key for r in renders}
    # format.json, the listing given up after its first page, then a GET a shard (each holds
    # one key but shard 0a, listed): 1 + 1 + 11 + 1; absent's video.
    assert asked == {"GET": 14, "HEAD": 1}, asked


def test_a_lock_whose_blobs_lost_the_race_pulls_the_entry_instead(tmp_path: Path) -> None:
    """Two machines rendered one key (claims off); the lock in git came from the one whose
    push found the entry taken, so its blobs never went up. The clone pulls the entry's render
    (no render paid), and the key is not marked bad."""
    env = {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"}
    winner_cache, loser_cache = Cache(tmp_path / "winner"), Cache(tmp_path / "loser")
    key = key_in("ef")
    winner = cached_render(winner_cache, tmp_path, key)
    loser = cached_render(loser_cache, tmp_path, key)
    siblings = [cached_render(winner_cache, tmp_path, key_in("ef")) for _ in range(2)]  # so shard ef is listed
    remote = open_remote(None, tmp_path / "state", env)
    assert remote is not None
    for render in [winner, *siblings]:
        asyncio.run(push_render(remote.store, render, winner_cache, None, "unsigned"))
    assert asyncio.run(push_render(remote.store, loser, loser_cache, None, "unsigned")) is False

    lock = {loser.key: loser, **{s.key: s for s in siblings}}
    clone = open_remote(None, tmp_path / "clone-state", env)
    assert clone is not None
    found = asyncio.run(clone.lookup(list(lock), known=lock, with_claims=False))
    assert found.hits[key] == loser and key in found.unread
    there = Cache(tmp_path / "there")
    got = asyncio.run(clone.pull(found.hits[key], there, tmp_path / "tmp"))
    assert got == winner
    assert there.lookup(key) == winner
    assert clone.bad_keys() == {}


def test_a_lock_render_whose_blob_is_gone_everywhere_is_a_miss_marked_once(tmp_path: Path) -> None:
    env = {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"}
    here = Cache(tmp_path / "here")
    renders = [cached_render(here, tmp_path, key_in("12")) for _ in range(2)]
    remote = open_remote(None, tmp_path / "state", env)
    assert remote is not None
    for render in renders:
        asyncio.run(push_render(remote.store, render, here, None, "unsigned"))
    gone = renders[0].video_sha256
    (tmp_path / "shared" / "v1" / "blobs" / "sha256" / gone[:2] / gone).unlink()

    found = asyncio.run(remote.lookup([r.key for r in renders], known={r.key: r for r in renders},
                                      with_claims=False))
    assert set(found.unread) == {r.key for r in renders}
    there = Cache(tmp_path / "there")
    try:
        asyncio.run(remote.pull(renders[0], there, tmp_path / "tmp"))
    except BlobProblem as exc:
        assert "missing" in str(exc)
    else:
        raise AssertionError("a render whose blob is gone was pulled")
    assert list(remote.bad_keys()) == [renders[0].key]
    assert there.lookup(renders[0].key) is None


def test_a_pulled_blob_is_linked_into_renders_and_other_blobs_are_copied(tmp_path: Path) -> None:
    env = {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"}
    here = Cache(tmp_path / "here")
    render = cached_render(here, tmp_path, key_in("34"))
    remote = open_remote(None, tmp_path / "state", env)
    assert remote is not None
    asyncio.run(push_render(remote.store, render, here, None, "unsigned"))

    there = Cache(tmp_path / "there")
    asyncio.run(remote.pull(render, there, tmp_path / "tmp"))
    sha, size = render.video_sha256, render.video_bytes
    assert there.fresh_pull(sha, size)
    out = tmp_path / "renders" / "intro.mp4"
    materialize(there.blob_path(sha), out, sha, size, shared=there.fresh_pull(sha, size))
    assert out.stat().st_ino == there.blob_path(sha).stat().st_ino  # written once
    assert out.read_bytes() == here.blob_path(sha).read_bytes()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    # A blob this process did not pull (rendered here, say) is copied: an edit in place of
    # renders/ must never reach the only copy of a paid render.
    assert not here.fresh_pull(sha, size)
    copy = tmp_path / "renders" / "outro.mp4"
    materialize(here.blob_path(sha), copy, sha, size, shared=here.fresh_pull(sha, size))
    assert copy.stat().st_ino != here.blob_path(sha).stat().st_ino
    # A pulled blob changed since (an edit in place through renders/) is no longer trusted.
    with out.open("ab") as edit:
        edit.write(b"edited")
    assert not there.fresh_pull(sha, size)
    assert there.verify_blob(sha, size) == "damaged"  # the cache's own check drops it


def test_a_blob_missing_with_no_entry_at_all_is_not_a_broken_entry(tmp_path: Path) -> None:
    """`pull` fetches by the lock's digests; before anyone pushed, nothing is there. That is
    not an entry pointing at a missing blob: once pushed, the render is pulled as usual."""
    env = {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"}
    here = Cache(tmp_path / "here")
    render = cached_render(here, tmp_path, key_in("56"))
    remote = open_remote(None, tmp_path / "state", env)
    assert remote is not None
    there = Cache(tmp_path / "there")
    try:
        asyncio.run(remote.pull(render, there, tmp_path / "tmp"))
    except BlobProblem as exc:
        assert "has no render of key" in str(exc) and "points at blob" not in str(exc)
    else:
        raise AssertionError("pulled a render nobody pushed")
    assert remote.bad_keys() == {}
    asyncio.run(push_render(remote.store, render, here, None, "unsigned"))
    assert asyncio.run(remote.pull(render, there, tmp_path / "tmp")) == render


def test_keys_marked_bad_from_many_threads_at_once_are_all_kept(tmp_path: Path) -> None:
    import threading

    remote = open_remote(None, tmp_path / "state", {"SPARKSPEC_REMOTE": f"file://{tmp_path}/shared"})
    assert remote is not None
    keys = [key_in("78") for _ in range(24)]
    workers = [threading.Thread(target=remote.mark_bad, args=(key, "blob gone")) for key in keys]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(remote.bad_keys()) == sorted(keys)
    remote.forget_bad(keys[:20])
    assert sorted(remote.bad_keys()) == sorted(keys[20:])
