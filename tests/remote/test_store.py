"""The store layer against obstore's memory store, a local folder and a real S3 server (moto)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from s3server import MotoServer
from sparkspec.errors import RemoteError
from sparkspec.remote import layout
from sparkspec.remote.claims import Claims, ClaimWatch, Held, Seen, new_claim
from sparkspec.remote.probe import probe_conditional_writes
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store

T = TypeVar("T")
KINDS = ["memory", "local", pytest.param("s3", marks=pytest.mark.slow)]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    kind = request.param

    def make(mode: str = "read-write", url: str | None = None) -> Store:
        if kind == "memory":
            settings = RemoteSettings(url or f"memory://t{secrets.token_hex(4)}", mode=mode)  # type: ignore[arg-type]
            return open_store(settings, {})
        if kind == "local":
            return open_store(RemoteSettings(url or f"file://{tmp_path}/remote", mode=mode), {})  # type: ignore[arg-type]
        server: MotoServer = request.getfixturevalue("moto_server")
        settings = RemoteSettings(url or server.bucket(), mode=mode, endpoint=server.endpoint)  # type: ignore[arg-type]
        return open_store(settings, server.env())

    return make


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_absent_objects_are_none(make_store: Callable[..., Store]) -> None:
    store = make_store()
    assert run(store.head("renders/aa/x.json")) is None
    assert run(store.get("renders/aa/x.json")) is None
    assert run(store.list("renders/")) == []


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_create_is_write_once_and_update_needs_the_current_etag(make_store: Callable[..., Store]) -> None:
    store = make_store()
    first = run(store.create("claims/ab/k.json", b"one"))
    assert first is not None
    assert run(store.create("claims/ab/k.json", b"two")) is None
    assert run(store.get("claims/ab/k.json"))[0] == b"one"  # type: ignore[index]
    assert run(store.update("claims/ab/k.json", b"three", '"not-the-etag"')) is None
    second = run(store.update("claims/ab/k.json", b"four", first))
    assert second is not None and second != first
    assert run(store.update("claims/ab/k.json", b"five", first)) is None  # stale now
    data, info = run(store.get("claims/ab/k.json"))  # type: ignore[misc]
    assert data == b"four" and info.etag == second and info.size == 4
    run(store.delete("claims/ab/k.json"))
    assert run(store.head("claims/ab/k.json")) is None


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_listing_and_streamed_download(make_store: Callable[..., Store], tmp_path: Path) -> None:
    store = make_store()
    body = secrets.token_bytes(3 << 20)
    sha = hashlib.sha256(body).hexdigest()
    run(store.put(layout.blob_path(sha), body))
    for i in range(3):
        run(store.put(f"renders/ab/{i}.json", b"{}"))
    assert sorted(i.path for i in run(store.list("renders/ab/"))) == [f"renders/ab/{i}.json" for i in range(3)]
    dest = tmp_path / "blob"
    assert run(store.download(layout.blob_path(sha), dest)) == (len(body), sha)
    assert dest.read_bytes() == body
    assert run(store.download("blobs/sha256/00/none", tmp_path / "x")) is None


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_read_only_store_writes_nothing(make_store: Callable[..., Store]) -> None:
    writer = make_store()
    url_store = make_store("read-only", url=None)
    for attempt in (url_store.put("a", b"x"), url_store.create("a", b"x"), url_store.update("a", b"x", "e"),
                    url_store.delete("a")):
        with pytest.raises(RemoteError, match="read-only"):
            run(attempt)
    assert run(writer.list("")) == []


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_probe_passes_on_a_store_that_honours_conditions(make_store: Callable[..., Store]) -> None:
    store = make_store()
    assert run(probe_conditional_writes(store)).conditional
    assert run(store.list(layout.PROBES + "/")) == []  # removed afterwards


class IgnoresConditions(Store):
    """A gateway that drops If-None-Match and If-Match, as some emulators do."""

    async def create(self, path: str, data: bytes) -> str | None:
        return await self.put(path, data)

    async def update(self, path: str, data: bytes, etag: str) -> str | None:
        return await self.put(path, data)


def test_probe_detects_a_store_that_ignores_if_none_match() -> None:
    inner = open_store(RemoteSettings("memory://ignoring"), {})
    store = IgnoresConditions(inner.backend, inner.display)
    result = run(probe_conditional_writes(store))
    assert not result.conditional and "If-None-Match" in result.detail


@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_claims_one_holder_and_exactly_one_taker(make_store: Callable[..., Store]) -> None:
    store = make_store()
    claims = Claims(store)
    key = "ab" + "0" * 62
    mine, theirs, third = new_claim(key, 30.0), new_claim(key, 30.0), new_claim(key, 30.0)
    held = run(claims.acquire(mine))
    assert isinstance(held, Held)
    seen = run(claims.acquire(theirs))
    assert isinstance(seen, Seen) and seen.claim is not None and seen.claim.owner == mine.owner
    from sparkspec.remote.claims import ClaimTask

    beat = run(claims.heartbeat(held, ClaimTask("task-1", "spark", 1.0, 3600)))
    assert beat is not None and beat.etag != held.etag
    assert run(claims.take_over(theirs, seen)) is None  # the ETag moved: holder alive
    stalled = run(claims.read(key))
    assert stalled is not None

    async def race() -> list[Held | None]:
        return list(await asyncio.gather(claims.take_over(theirs, stalled), claims.take_over(third, stalled)))

    results = run(race())
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].claim.task is not None and winners[0].claim.task.id == "task-1"  # collected, not re-paid
    assert run(claims.heartbeat(beat)) is None  # the old holder lost it
    run(claims.release(beat))  # not ours any more: stays
    assert run(claims.read(key)) is not None
    run(claims.release(winners[0]))
    assert run(claims.read(key)) is None


def test_claim_watch_uses_the_waiters_clock() -> None:
    now = [0.0]
    watch = ClaimWatch(10.0, lambda: now[0])
    claim = new_claim("ab" + "0" * 62, 10.0)
    assert not watch.dead(Seen(claim, '"1"'))
    now[0] = 9.9
    assert not watch.dead(Seen(claim, '"1"'))
    now[0] = 12.0
    assert not watch.dead(Seen(claim, '"2"'))  # it moved: alive, the wait starts again
    now[0] = 21.9
    assert not watch.dead(Seen(claim, '"2"'))
    now[0] = 22.0
    assert watch.dead(Seen(claim, '"2"'))


def test_a_claims_own_ttl_is_believed_up_to_an_hour() -> None:
    """A claim written with `ttl: 1e18` (anyone who can write to the remote) made every apply
    wait for ever, whatever the waiter's own ttl."""
    now = [0.0]
    watch = ClaimWatch(3.0, lambda: now[0])
    claim = replace(new_claim("ab" + "0" * 62, 3.0), ttl=1e18)
    assert not watch.dead(Seen(claim, '"1"'))
    now[0] = 3599.0
    assert not watch.dead(Seen(claim, '"1"'))
    now[0] = 3600.0
    assert watch.dead(Seen(claim, '"1"'))


def test_s3_errors_carry_the_stores_words_without_credentials() -> None:
    settings = RemoteSettings("s3://bucket/p", endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    env = {"AWS_ACCESS_KEY_ID": "AKIDCANARY1234", "AWS_SECRET_ACCESS_KEY": "canary-secret-value-xyz"}
    store = open_store(settings, env)
    with pytest.raises(RemoteError) as raised:
        run(store.get("format.json"))
    text = str(raised.value)
    assert "s3://bucket/p" in text and "GET format.json" in text
    assert "canary-secret-value-xyz" not in text and "AKIDCANARY1234" not in text


def test_a_failed_credential_lookup_is_not_called_the_stores_answer() -> None:
    """Given no keys, obstore asks the instance metadata service; its refusal (here, a proxy's
    403) was shown as 'GET format.json: HTTP 403 Forbidden', sending the user to the bucket's
    permissions instead of their missing credentials."""
    from sparkspec.remote.store import store_words

    obstore_said = Exception(
        "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 1.69ms - Server "
        "returned non-2xx status code: 403 Forbidden: resolve_deny: denied destination\n\nDebug source: ...")
    assert store_words(obstore_said) == (
        "no AWS credentials: none in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) or an AWS "
        "profile, and the instance metadata service gave none (HTTP 403 Forbidden)")


def test_no_credentials_and_no_metadata_service_is_said_before_any_request() -> None:
    settings = RemoteSettings("s3://bucket/p", endpoint="http://127.0.0.1:9")
    with pytest.raises(RemoteError) as raised:
        open_store(settings, {"AWS_EC2_METADATA_DISABLED": "true"})
    assert str(raised.value) == ("remote s3://bucket/p (endpoint http://127.0.0.1:9): no AWS credentials: set "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                                 "(AWS_EC2_METADATA_DISABLED rules out the instance's own)")



@pytest.mark.parametrize("make_store", KINDS, indirect=True)
def test_no_store_call_completes_from_a_foreign_thread(make_store: Callable[..., Store], tmp_path: Path) -> None:
    # obstore's async API completes futures from tokio threads (call_soon_threadsafe from a
    # thread Python did not start); one still inside that call when the interpreter finalizes
    # aborts the process with SIGABRT. Every store call must come back on a Python thread.
    foreign: list[str] = []

    async def calls() -> None:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def watched(*args: Any, **kwargs: Any) -> Any:
            if isinstance(threading.current_thread(), threading._DummyThread):
                foreign.append(repr(args[0]))
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = watched  # type: ignore[method-assign]
        store = make_store()
        blob = b"x" * 3_000_000
        assert await store.put("blobs/aa/x", blob) is not None
        assert await store.create("claims/aa/k.json", b"one") is not None
        info = await store.head("claims/aa/k.json")
        assert info is not None and info.etag is not None
        assert await store.update("claims/aa/k.json", b"two", info.etag) is not None
        assert await store.get("claims/aa/k.json") is not None
        assert await store.download("blobs/aa/x", tmp_path / "x") == (len(blob), hashlib.sha256(blob).hexdigest())
        assert sorted(i.path for i in await store.list("")) == ["blobs/aa/x", "claims/aa/k.json"]
        await store.delete("claims/aa/k.json")
        assert await store.head("claims/aa/k.json") is None

    run(calls())
    assert foreign == []


class RefusesWrites(Store):
    """A store whose writes all fail (no write permission, or gone), counting them."""

    writes = 0

    async def create(self, path: str, data: bytes) -> str | None:
        type(self).writes += 1
        raise RemoteError(f"remote {self.display}: PUT {path} (If-None-Match): HTTP 403 Forbidden: AccessDenied")

    async def delete(self, path: str) -> None:
        raise RemoteError(f"remote {self.display}: DELETE {path}: HTTP 403 Forbidden: AccessDenied")


def test_a_failed_probe_reports_its_own_failure_once_a_run(tmp_path: Path) -> None:
    """The probe's cleanup failing too does not hide why the probe failed; scenes starting at
    once share one probe, and later ones are told the same without asking the store again."""
    from sparkspec.remote.session import Remote

    inner = open_store(RemoteSettings("memory://refusing"), {})
    remote = Remote(RemoteSettings("memory://refusing"), RefusesWrites(inner.backend, inner.display), tmp_path)

    async def scenes() -> list[BaseException | object]:
        first = await asyncio.gather(*(remote.claims_work() for _ in range(3)), return_exceptions=True)
        return [*first, *(await asyncio.gather(remote.claims_work(), return_exceptions=True))]

    answers = run(scenes())
    assert RefusesWrites.writes == 1
    assert all(isinstance(a, RemoteError) for a in answers), answers
    assert len({str(a) for a in answers}) == 1  # one warning line, whatever the number of scenes
    assert str(answers[0]).startswith("remote memory://refusing: PUT probe/") and "AccessDenied" in str(answers[0])
    assert not (tmp_path / "remote-probe.json").exists()  # asked again by the next run
