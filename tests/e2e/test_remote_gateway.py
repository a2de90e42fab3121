"""A gateway that drops conditional headers (as some emulators and proxies do) in front of a real
S3 server: sparkspec's probe notices, turns claims off and says so, once per machine."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fakeapi import FakeSparkAPI
from s3server import MotoServer

from .test_remote import SPEC, machine

DROPPED = {"if-none-match", "if-match"}


def header_dropping_proxy(upstream: str) -> ThreadingHTTPServer:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in DROPPED}
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(key, value)
            # A HEAD answer's length is the object's, not of the (empty) body.
            length = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.slow
def test_a_store_that_ignores_if_none_match_is_detected(tmp_path: Path, fake_api: FakeSparkAPI,
                                                        moto_server: MotoServer) -> None:
    proxy = header_dropping_proxy(moto_server.endpoint)
    try:
        env = moto_server.env() | {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{proxy.server_address[1]}"}
        box = machine(tmp_path, "box", fake_api, moto_server.bucket(), env)
        box.write(SPEC)
        first = box.apply()
        warnings = [e for e in first.events() if e["event"] == "remote_warning"]
        assert len(warnings) == 1 and "ignores conditional writes" in str(warnings[0]["message"])
        assert "claims are off" in str(warnings[0]["message"])
        assert sorted(e["scene"] for e in first.events() if e["event"] == "pushed") == ["intro", "logo", "next"], first.out
        probe_memo = (box.root / ".sparkspec" / "remote-probe.json").read_text()
        assert '"conditional": false' in probe_memo
        # Remembered per machine and remote: asked once, still said on each apply that claims.
        (box.root / "project.spark.yaml").write_text(SPEC.replace("a logo glows", "a logo shines"))
        again = box.apply()
        assert [e["scene"] for e in again.events() if e["event"] == "completed"] == ["logo"]
        assert len([e for e in again.events() if e["event"] == "remote_warning"]) == 1
    finally:
        proxy.shutdown()
