"""Local stand-ins for the providers' HTTP APIs, speaking their real request and response shapes.

Only the network boundary is replaced: the platform's own clients talk HTTP to these servers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ProviderState:
    """What the fake providers hold: media files by id, and every request they got."""

    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # id -> (bytes, mime)
    requests: list[RecordedRequest] = field(default_factory=list)
    meta_token: str = "EAAG-test-access-token"
    twilio_auth: tuple[str, str] = ("AC" + "0" * 32, "twilio-auth-token")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode())

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(RecordedRequest("GET", self.path, dict(self.headers.items()), b""))
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        auth = self.headers.get("Authorization", "")
        # Meta: GET /{version}/{media-id} -> {url, ...}; GET /lookaside/{id} -> the bytes.
        if match := re.fullmatch(r"/v[\d.]+/([\w.-]+)", self.path.split("?")[0]):
            media_id = match.group(1)
            if auth != f"Bearer {state.meta_token}":
                return self._json(
                    401,
                    {
                        "error": {
                            "message": "Invalid OAuth access token.",
                            "type": "OAuthException",
                            "code": 190,
                        }
                    },
                )
            if media_id not in state.media:
                return self._json(
                    400,
                    {
                        "error": {
                            "message": "Unsupported get request.",
                            "type": "GraphMethodException",
                            "code": 100,
                        }
                    },
                )
            data, mime = state.media[media_id]
            return self._json(
                200,
                {
                    "messaging_product": "whatsapp",
                    "url": f"{base}/lookaside/{media_id}",
                    "mime_type": mime,
                    "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
                    "file_size": len(data),
                    "id": media_id,
                },
            )
        if match := re.fullmatch(r"/lookaside/([\w.-]+)", self.path):
            if auth != f"Bearer {state.meta_token}":
                return self._send(404, b"")
            data, mime = state.media[match.group(1)]
            return self._send(200, data, mime)
        # Twilio: media URL answers a redirect to the CDN, which does not want credentials.
        if match := re.fullmatch(r"/2010-04-01/Accounts/(\w+)/Messages/\w+/Media/(\w+)", self.path):
            expected = "Basic " + base64.b64encode(":".join(state.twilio_auth).encode()).decode()
            if auth != expected:
                return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
            # The CDN is another host, as Twilio's is: clients must not send it credentials.
            cdn = f"http://localhost:{self.server.server_address[1]}"
            return self._send(307, b"", Location=f"{cdn}/cdn/{match.group(2)}")
        if match := re.fullmatch(r"/cdn/(\w+)", self.path):
            if auth:
                return self._send(400, b"credentials leaked to the CDN")
            data, mime = state.media[match.group(1)]
            return self._send(200, data, mime)
        return self._json(404, {"error": {"message": "Unknown path", "code": 100}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ProviderState


@contextmanager
def provider_server() -> Iterator[tuple[str, ProviderState]]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ProviderState()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()


class TcpProxy:
    """Forwards a local port to another; `down()` makes the target unreachable for a while."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.listen_port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()
