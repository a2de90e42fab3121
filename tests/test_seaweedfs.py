"""The SeaweedFS test server: loopback only, signed requests only, conditional writes honoured."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from seaweedfs import SeaweedServer

pytestmark = pytest.mark.slow  # starts a real SeaweedFS (seconds)


def _listening(pid: int) -> list[str]:
    """Local addresses of the TCP sockets `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append(f"{_ip(address)}:{int(port, 16)}")
    return found


def _ip(hex_address: str) -> str:
    if len(hex_address) == 8:
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "ipv6:" + hex_address


def test_every_port_is_on_loopback_and_requests_must_be_signed(seaweedfs_server: SeaweedServer) -> None:
    assert seaweedfs_server.process is not None
    listening = _listening(seaweedfs_server.process.pid)
    assert len(listening) >= len(seaweedfs_server.ports)
    assert all(address.startswith("127.0.0.1:") for address in listening), listening

    import httpx

    anonymous = httpx.get(seaweedfs_server.endpoint + "/", timeout=10)
    assert anonymous.status_code == 403


def test_a_bucket_takes_write_once_and_if_match_and_refuses_a_bad_checksum(seaweedfs_server: SeaweedServer) -> None:
    import base64
    import hashlib

    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError
    from obstore.store import S3Store

    bucket = seaweedfs_server.bucket("")[len("s3://"):]
    env = seaweedfs_server.env()
    store = S3Store(bucket, endpoint=env["AWS_ENDPOINT_URL_S3"], access_key_id=env["AWS_ACCESS_KEY_ID"],
                    secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"],
                    client_options={"allow_http": True})
    first = obstore.put(store, "claims/k.json", b"one", mode="create")
    with pytest.raises((AlreadyExistsError, PreconditionError)):
        obstore.put(store, "claims/k.json", b"two", mode="create")
    obstore.put(store, "claims/k.json", b"three", mode={"e_tag": first["e_tag"]})
    with pytest.raises(PreconditionError):
        obstore.put(store, "claims/k.json", b"four", mode={"e_tag": first["e_tag"]})
    assert bytes(obstore.get(store, "claims/k.json").bytes()) == b"three"

    client = seaweedfs_server._client()
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    with pytest.raises(Exception, match="BadDigest|did not match"):
        client.put_object(Bucket=bucket, Key="blob", Body=b"these bytes", ChecksumSHA256=wrong)  # type: ignore[attr-defined]


def test_stop_leaves_nothing_behind() -> None:
    # A server killed elsewhere (a benchmark, a worker) leaves its sockets in /tmp; a port
    # number of ours may match one of theirs by chance, so only what appeared is ours.
    before = set(Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"))
    server = SeaweedServer().start()
    folder, ports = server.dir, dict(server.ports)
    ours = [Path(tempfile.gettempdir()) / f"seaweedfs-{role}-grpc-{ports[f'{role}.port.grpc']}.sock"
            for role in ("master", "volume", "filer", "s3")]
    assert all(path.is_socket() for path in ours), "weed no longer names its sockets as stop() expects"
    server.stop()
    assert not folder.exists()
    assert [path for path in ours if path.exists()] == []
    appeared = set(Path(tempfile.gettempdir()).glob("seaweedfs-*.sock")) - before  # other workers' servers too
    assert [path for path in appeared if path.stem.rsplit("-", 1)[-1] in {str(v) for v in ports.values()}] == []
