"""The store layer's contract, one suite run against every kind of store sparkspec supports:
obstore's memory store, a local folder, and real S3 servers on 127.0.0.1 (moto in the default
run, SeaweedFS in the slow run). What the layers above rely on: absent is None, listings
list, bodies arrive whole or not at all, entries are write-once, If-Match is honoured, and
signed entries are the only ones a signing reader sees."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flaky_proxy import CorruptingProxy
from sparkspec.errors import RemoteError
from sparkspec.remote import layout
from sparkspec.remote.entries import encode_entry, signer_of
from sparkspec.remote.index import lookup
from sparkspec.remote.settings import RemoteSettings
from sparkspec.remote.store import Store, open_store
from sparkspec.remote.transfer import pull_render, push_render
from sparkspec.state.cache import Cache, CachedRender

BACKENDS = ["memory", "local", "moto", pytest.param("seaweedfs", marks=pytest.mark.slow)]
S3_BACKENDS = [
    pytest.param("moto", marks=pytest.mark.xfail(
        strict=True, reason="moto stores a body whose x-amz-checksum-sha256 does not match (it does not "
                            "verify checksums); AWS and SeaweedFS refuse it")),
    pytest.param("seaweedfs", marks=pytest.mark.slow)]

def run(coro: Any) -> Any:
    return asyncio.run(coro)

class Stores:
    """Opens stores of one backend; for S3 backends, each test gets its own bucket."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.kind = kind
        self.request = request
        self.tmp_path = tmp_path
        self.url = self._fresh_url()

    def _server(self) -> Any:
        return self.request.getfixturevalue("moto_server" if self.kind == "moto" else "seaweedfs_server")

    def _fresh_url(self) -> str:
        if self.kind == "memory":
            return f"memory://contract-{secrets.token_hex(6)}"
        if self.kind == "local":
            return f"file://{self.tmp_path}/remote"
        return str(self._server().bucket())

    def open(self, mode: str = "read-write", endpoint: str | None = None) -> Store:
        if self.kind in ("memory", "local"):
            return open_store(RemoteSettings(self.url, mode=mode), {})  # type: ignore[arg-type]
        server = self._server()
        env = {k: v for k, v in server.env().items() if k != "AWS_ENDPOINT_URL_S3"}
        settings = RemoteSettings(self.url, mode=mode, endpoint=endpoint or server.endpoint,  # type: ignore[arg-type]
                                  region=env.get("AWS_REGION"))
        return open_store(settings, env)

    def upstream_port(self) -> int:
        return int(self._server().endpoint.rsplit(":", 1)[1])

@pytest.fixture
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return Stores(request.param, request, tmp_path)

def cached_render(cache: Cache, tmp: Path, size: int = 5000) -> CachedRender:
    shas = []
    blobs = (secrets.token_bytes(size), secrets.token_bytes(300))
    for data in blobs:
        sha = hashlib.sha256(data).hexdigest()
        part = tmp / f"{sha}.part"
        part.write_bytes(data)
        cache.put_blob(part, sha)
        shas.append(sha)
    render = CachedRender(key=secrets.token_hex(32), provider="local", model="m", task_id="t1", seed=7, tokens=100,
                          video_sha256=shas[0], video_bytes=len(blobs[0]), last_frame_sha256=shas[1],
                          last_frame_bytes=len(blobs[1]), inputs={"prompt": "a cat"})
    cache.record(render)
    return render

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_put_head_get_list_and_a_streamed_download(stores: Stores, tmp_path: Path) -> None:
    store = stores.open()
    body = secrets.token_bytes((2 << 20) + 123)  # more than one download chunk
    sha = hashlib.sha256(body).hexdigest()
    path = layout.blob_path(sha)
    assert run(store.head(path)) is None and run(store.get(path)) is None
    run(store.put(path, body))
    info = run(store.head(path))
    assert info is not None and info.size == len(body) and info.path == path
    data, got = run(store.get(path))
    assert data == body and got.size == len(body)
    assert run(store.download(path, tmp_path / "blob")) == (len(body), sha)
    assert (tmp_path / "blob").read_bytes() == body
    names = [f"renders/ab/{i:04d}.json" for i in range(5)]
    for name in names:
        run(store.put(name, b"{}"))
    run(store.put("renders/ac/other.json", b"{}"))
    assert sorted(i.path for i in run(store.list("renders/ab/"))) == names
    assert {i.size for i in run(store.list("renders/ab/"))} == {2}
    assert run(store.list("renders/zz/")) == []

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_create_is_write_once(stores: Stores) -> None:
    store = stores.open()
    path = layout.entry_path("cd" + "1" * 62, "unsigned")
    assert run(store.create(path, b"first")) is not None
    assert run(store.create(path, b"second")) is None
    assert run(stores.open().create(path, b"third")) is None  # another client, same answer
    assert run(store.get(path))[0] == b"first"

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_update_needs_the_current_etag(stores: Stores) -> None:
    store = stores.open()
    path = layout.claim_path("ef" + "2" * 62)
    assert run(store.update(path, b"nothing there", '"x"')) is None
    first = run(store.create(path, b"one"))
    second = run(store.update(path, b"two", first))
    assert second is not None and second != first
    assert run(store.update(path, b"stale", first)) is None
    data, info = run(store.get(path))
    assert data == b"two" and info.etag == second

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_push_then_pull_into_another_machines_cache(stores: Stores, tmp_path: Path) -> None:
    here, there = Cache(tmp_path / "here"), Cache(tmp_path / "there")
    render = cached_render(here, tmp_path, size=300_000)
    assert run(push_render(stores.open(), render, here, None, "unsigned")) is True
    reader = stores.open("read-only")
    found = run(lookup(reader, [render.key, secrets.token_hex(32)], None, "unsigned"))
    assert found.hits == {render.key: render}
    run(pull_render(reader, render, there, tmp_path / "tmp"))
    assert there.lookup(render.key) == render
    assert there.blob_path(render.video_sha256).read_bytes() == here.blob_path(render.video_sha256).read_bytes()

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_a_signing_reader_sees_only_its_signers_valid_entries(stores: Stores, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    team_key, other_key = b"team signing key", b"someone else"
    signed, unsigned, forged = (cached_render(cache, tmp_path) for _ in range(3))
    store = stores.open()
    assert run(push_render(store, signed, cache, team_key, signer_of(team_key)))
    assert run(push_render(store, unsigned, cache, None, "unsigned"))
    # A writer without the team's key puts an entry at the team signer's path: a forged signature.
    fake = encode_entry(forged, other_key).replace(signer_of(other_key).encode(), signer_of(team_key).encode())
    assert run(store.create(layout.entry_path(forged.key, signer_of(team_key)), fake)) is not None

    keys = [signed.key, unsigned.key, forged.key]
    team = run(lookup(store, keys, team_key, signer_of(team_key)))
    assert set(team.hits) == {signed.key}
    assert team.ignored == {forged.key: "its signature does not match"}
    anyone = run(lookup(store, keys, None, "unsigned"))
    assert set(anyone.hits) == {unsigned.key}
    stranger = run(lookup(store, keys, other_key, signer_of(other_key)))
    assert stranger.hits == {}

@pytest.mark.parametrize("stores", BACKENDS, indirect=True)
def test_read_only_writes_nothing(stores: Stores) -> None:
    reader = stores.open("read-only")
    for attempt in (reader.put("format.json", b"{}"), reader.create("format.json", b"{}"),
                    reader.update("format.json", b"{}", '"e"'), reader.delete("format.json")):
        with pytest.raises(RemoteError, match="read-only"):
            run(attempt)
    assert run(stores.open().list("")) == []

@pytest.fixture
def corrupting(stores: Stores) -> Iterator[CorruptingProxy]:
    proxy = CorruptingProxy(stores.upstream_port(), match="/blobs/").start()
    yield proxy
    proxy.stop()

@pytest.mark.parametrize("stores", S3_BACKENDS, indirect=True)
def test_the_store_refuses_a_body_damaged_in_transit(stores: Stores, corrupting: CorruptingProxy) -> None:
    body = secrets.token_bytes(100_000)
    path = layout.blob_path(hashlib.sha256(body).hexdigest())
    through_proxy = stores.open(endpoint=corrupting.endpoint)
    refused: RemoteError | None = None
    try:
        run(through_proxy.put(path, body))
    except RemoteError as exc:
        refused = exc
    assert corrupting.damaged >= 1
    assert refused is not None, "the store kept a body that does not match its checksum"
    assert f"PUT {path}" in str(refused)
    assert run(stores.open().head(path)) is None  # nothing stored under the digest

def test_the_proxy_damages_only_what_it_is_asked_to(tmp_path: Path) -> None:
    """The proxy is a test tool: through it, an unmatched path arrives intact."""
    import http.server
    import threading
    import urllib.request

    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - the stdlib's naming
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = CorruptingProxy(server.server_address[1], match="/blobs/").start()
    try:
        for path in ("/blobs/x", "/renders/y"):
            request = urllib.request.Request(proxy.endpoint + path, data=b"abcdef", method="PUT")
            urllib.request.urlopen(request, timeout=10).close()
    finally:
        proxy.stop()
        server.shutdown()
    assert received[0] != b"abcdef" and len(received[0]) == 6
    assert received[1] == b"abcdef" and proxy.damaged == 1
    assert proxy.requests == {"PUT": 2}
