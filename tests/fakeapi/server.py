"""The fake's HTTP server: routing to the three wire adapters, the steps every dialect shares
(auth, counting, injected faults, the create flow), and the signed output downloads."""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fakeapi import ark, generation, queue
from fakeapi.generation import gateway_error
from fakeapi.store import Fault, Task, check_params, params_key

if TYPE_CHECKING:
    from fakeapi.store import FakeSparkAPI

CHUNK = 256 * 1024
ErrorBody = Callable[[int, str, str | None], Any]  # (HTTP status, message, code) -> body
Route = tuple[str, "re.Pattern[str]", Callable[..., None]]


def serve(api: FakeSparkAPI) -> tuple[ThreadingHTTPServer, threading.Thread]:
    handler = type("Handler", (Handler,), {"api": api})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="fake-spark", daemon=True)
    thread.start()
    return server, thread


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # injected resets and timeouts end in broken sockets on purpose


class Handler(BaseHTTPRequestHandler):
    api: FakeSparkAPI
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (40 ms on Linux), as no real gateway makes anyone wait.
    disable_nagle_algorithm = True
    routes: list[Route] = []  # filled below, from the adapters

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- routing --------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(length) if length else b""
        self.query = parse_qs(url.query)
        with self.api.lock:
            self.api.peers.append((url.path, self.client_address[1]))
        if method == "GET" and url.path.startswith("/files/"):
            self.file(url.path, self.query.get("X-Signature", [""])[0])
            return
        for verb, pattern, action in self.routes:
            match = pattern.fullmatch(url.path)
            if verb == method and match:
                action(self, *match.groups())
                return
        self.json(404, {"message": "no such route"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    # -- plumbing ---------------------------------------------------------------------------
    def json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    _json = json

    def reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def apply_fault(self, fault: Fault | None, error: ErrorBody = gateway_error) -> bool:
        """Answer with the fault if it ends the request; True when it did."""
        if fault is None:
            return False
        if fault.kind == "reset":
            self.reset()
            return True
        if fault.kind == "slow":  # answer late: a client with a shorter timeout has gone
            time.sleep(fault.delay)
            self.close_connection = True
            return False
        if fault.kind == "status":
            body = fault.body if fault.body is not None else error(fault.status, f"injected HTTP {fault.status}",
                                                                   None)
            self.json(fault.status, body, fault.headers)
            return True
        return False

    def authorized(self, error: ErrorBody = gateway_error) -> bool:
        header = self.headers.get("Authorization")
        with self.api.lock:
            self.api.api_authorization.append(header)
        if header != f"Bearer {self.api.api_key}":
            self.json(401, error(401, "Invalid API key", "unauthorized"))
            return False
        return True

    def count(self, endpoint: str, key: str | None, task_id: str = "") -> None:
        with self.api.lock:
            self.api.requests[endpoint] += 1
            if key is not None:
                self.api.requests_by_key[key] += 1
            self.api.events.append((time.monotonic(), endpoint, task_id))

    # -- what every dialect does the same way ---------------------------------------------------
    def create(self, dialect: str, body: Any, params: Any, model: Any, known_model: str,
               answer: Callable[[Task], Any], error: ErrorBody) -> None:
        """Count, keep the body, check auth, play an injected fault, check, make the task, answer."""
        api = self.api
        fault = api.take_fault("create")
        if not isinstance(params, dict) or not isinstance(model, str):
            self.count("create", None)
            self.json(400, error(400, "malformed request body", "InvalidParameter"))
            return
        self.count("create", params_key(params))
        with api.lock:
            api.create_body_bytes.append(len(self.raw))
            if api.keep_bodies:
                api.create_bodies.append(body)
        if not self.authorized(error):
            return
        if fault is not None and fault.kind in ("reset", "slow"):
            if fault.create_task:
                api.create(params, model, dialect)  # made, but the client never hears of it
            if fault.kind == "reset":
                self.reset()
            else:
                time.sleep(fault.delay)
                self.close_connection = True
            return
        if fault is not None and fault.kind == "late":  # made at once, its answer sent after `delay`
            fault, late = None, fault.delay
        else:
            late = 0.0
        if self.apply_fault(fault, error):
            return
        problem = f"unknown model {model}" if model != known_model else check_params(params)
        if problem:
            self.json(400, error(400, problem, "InvalidParameter"))
            return
        made = api.create(params, model, dialect)
        time.sleep(late)
        self.json(200, answer(made))

    def task(self, endpoint: str, task_id: str, error: ErrorBody) -> Task | None:
        """The task a query names, after counting, auth and faults; None when answered already."""
        api = self.api
        task = api.lookup(task_id)
        self.count(endpoint, task.key if task else None, task_id)
        if not self.authorized(error):
            return None
        if self.apply_fault(api.take_fault(endpoint), error):
            return None
        if task is None:
            self.json(404, error(404, f"task {task_id} not found", "ResourceNotFound"))
            return None
        if endpoint == "query":
            with api.lock:
                task.queries += 1
        return task

    # -- signed downloads, shared by every dialect ------------------------------------------------
    def file(self, path: str, signature: str) -> None:
        api = self.api
        parts = path.split("/")
        task = api.tasks.get(parts[2]) if len(parts) == 4 else None
        which = "video" if path.endswith(".mp4") else "image"
        with api.lock:
            api.download_authorization.append(self.headers.get("Authorization"))
        self.count("download", task.key if task else None, task.id if task else "")
        fault = api.take_fault(which)
        if fault is not None and fault.kind in ("reset", "slow", "status"):
            self.apply_fault(fault)
            return
        if task is None or signature != task.token or task.render is None or not task.render.done():
            self.json(404, {"message": "NoSuchKey"})
            return
        with api.lock:
            task.downloads += 1
        video, frame, *_ = task.render.result()
        source = video if which == "video" else frame
        padding = api.video_padding if which == "video" else 0
        tag = task.id.encode() if api.unique else b""
        size = source.stat().st_size + (8 + padding if padding else 0) + _tagged(tag, which)
        kind = fault.kind if fault is not None else None
        declared = size + 1000 if kind == "short_length" else size
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4" if which == "video" else "image/png")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        if kind == "garbage":
            remaining = size
            rng = random.Random(task.id)
            while remaining > 0:
                n = min(CHUNK, remaining)
                self.wfile.write(rng.randbytes(n))
                remaining -= n
            return
        limit = size // 2 if kind == "truncate" else size
        sent = 0
        if kind == "stall":  # half the body, then nothing for `delay` seconds, then the rest
            body = b"".join(_body(source, padding, tag, which))
            self.wfile.write(body[: size // 2])
            self.wfile.flush()
            time.sleep(fault.delay if fault is not None else 0.0)
            self.wfile.write(body[size // 2:])
            return
        for chunk in _body(source, padding, tag, which):
            if sent + len(chunk) > limit:
                self.wfile.write(chunk[: limit - sent])
                sent = limit
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        if sent < declared:
            self.wfile.flush()
            self.reset()


Handler.routes = generation.ROUTES + queue.ROUTES + ark.ROUTES


def _tagged(tag: bytes, which: str) -> int:
    """The bytes a task's tag adds to a file: a `free` box (8 + tag) or a tEXt chunk (17 + tag)."""
    return 0 if not tag else 8 + len(tag) if which == "video" else 17 + len(tag)


def _body(source: Path, padding: int, tag: bytes = b"", which: str = "video") -> Iterator[bytes]:
    if tag and which != "video":  # a PNG: a tEXt chunk before its IEND
        data = source.read_bytes()
        chunk = b"tEXt" + b"task\0" + tag
        yield data[:-12] + struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[-12:]
        return
    with source.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk
    if tag:
        yield struct.pack(">I", 8 + len(tag)) + b"free" + tag
    if padding:
        yield struct.pack(">I", 8 + padding) + b"free"
        zeros = bytes(CHUNK)
        left = padding
        while left > 0:
            n = min(CHUNK, left)
            yield zeros[:n]
            left -= n
