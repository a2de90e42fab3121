"""A TCP proxy on 127.0.0.1 in front of an HTTP server, that counts requests and can damage
request bodies in transit (what does a store do with a body that is not what was sent?).

`LoopbackProxy(upstream_port).start()` listens on a free port and forwards every connection
to the upstream. Requests are read one by one (HTTP/1.1 keep-alive) and counted by method
in `requests`. With `match` given (`CorruptingProxy`), a PUT whose path contains it and that
has a Content-Length gets one byte of its body flipped, its headers (and so its checksum and
signature) untouched; with `truncate` too (`TruncatingProxy`), only the first half of that
body goes upstream and the connection is cut, as when a network drops mid-upload.
Everything else, and every response, passes as is.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from contextlib import suppress


class LoopbackProxy:
    def __init__(self, upstream_port: int, match: str | None = None, truncate: bool = False) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.match = match.encode() if match is not None else None
        self.truncate = truncate
        self.damaged = 0
        self.requests: Counter[str] = Counter()
        self._count = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CorruptingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with suppress(OSError):
            self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, dest: socket.socket) -> None:
        with suppress(OSError):
            while chunk := source.recv(65536):
                dest.sendall(chunk)
        with suppress(OSError):
            dest.shutdown(socket.SHUT_WR)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = None
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                    if name.strip().lower() == b"transfer-encoding":
                        length = None  # chunked: stop parsing, pass the rest through
                        with self._count:
                            self.requests[lines[0].partition(b" ")[0].decode("ascii", "replace")] += 1
                        upstream.sendall(head + b"\r\n\r\n" + buffer)
                        self._pipe(client, upstream)
                        return
                body_length = length or 0
                while len(buffer) < body_length:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:body_length], buffer[body_length:]
                method, _, rest = lines[0].partition(b" ")
                with self._count:
                    self.requests[method.decode("ascii", "replace")] += 1
                if self.match is not None and method == b"PUT" and self.match in rest.split(b" ")[0] and body:
                    middle = len(body) // 2
                    self.damaged += 1
                    if self.truncate:
                        upstream.sendall(head + b"\r\n\r\n" + body[:middle])
                        return  # the connection is cut mid-body
                    body = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1:]
                upstream.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            with suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)


class CorruptingProxy(LoopbackProxy):
    def __init__(self, upstream_port: int, match: str = "/blobs/") -> None:
        super().__init__(upstream_port, match)


class TruncatingProxy(LoopbackProxy):
    def __init__(self, upstream_port: int, match: str = "/blobs/") -> None:
        super().__init__(upstream_port, match, truncate=True)

