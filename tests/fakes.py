"""Local stand-ins for the providers' HTTP APIs, speaking their real request and response shapes.

Only the network boundary is replaced: the platform's own clients talk HTTP to these servers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode
from urllib.request import Request, urlopen


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ProviderState:
    """What the fake providers hold: media files by id, and every request they got."""

    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # id -> (bytes, mime)
    requests: list[RecordedRequest] = field(default_factory=list)
    meta_token: str = "EAAG-test-access-token"
    twilio_auth: tuple[str, str] = ("AC" + "0" * 32, "twilio-auth-token")
    # Scripted answers for the next send calls, in order: (HTTP status, JSON body).
    send_errors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # Seconds each send call takes, as a real provider's round trip does.
    send_latency: float = 0.0
    # Templates: Meta's by WABA id (as the Graph API lists them), Twilio's Content resources.
    meta_templates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    twilio_contents: list[dict[str, Any]] = field(default_factory=list)
    # At most this many templates a page, whatever the client asks: listings take pages.
    template_page_size: int = 2
    # As Meta does, report every accepted send with a signed `sent` status webhook that echoes
    # its biz_opaque_callback_data, posted to this URL with this app secret (off when empty).
    status_webhook_url: str = ""
    status_webhook_secret: str = ""
    # The `sent` statuses answered 200 by the platform: (wamid, biz_opaque_callback_data).
    statuses_reported: list[tuple[str, str]] = field(default_factory=list)
    # The Twilio messages created, as the Messages resource lists them (newest last).
    twilio_messages: list[dict[str, Any]] = field(default_factory=list)
    # Scripted answers (errors, odd pages) for the next template listing calls: (HTTP status,
    # JSON body).
    listing_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def sends(self) -> list[RecordedRequest]:
        """The send calls received (Meta's /messages and Twilio's Messages.json), in order."""
        return [
            r
            for r in list(self.requests)
            if r.method == "POST" and (r.path.endswith("/messages") or r.path.endswith(".json"))
        ]


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
        path, _, query = self.path.partition("?")
        # Meta: GET /{version}/{waba-id}/message_templates, cursor-paginated.
        if match := re.fullmatch(r"/(v[\d.]+)/(\w+)/message_templates", path):
            return self._meta_templates(match.group(1), match.group(2), parse_qs(query), base)
        # Twilio Content API: GET /v1/ContentAndApprovals, paginated by meta.next_page_url.
        if path == "/v1/ContentAndApprovals":
            return self._twilio_contents(parse_qs(query), base)
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
        # Twilio: GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=..., newest first.
        if match := re.fullmatch(r"/2010-04-01/Accounts/(\w+)/Messages\.json", path):
            return self._twilio_messages(match.group(1), parse_qs(query), base)
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

    def _page_bounds(self, offset: int, requested: int, total: int) -> tuple[int, int]:
        size = max(1, min(requested, self.server.state.template_page_size))
        return offset, min(offset + size, total)

    def _meta_templates(
        self, version: str, waba_id: str, query: dict[str, list[str]], base: str
    ) -> None:
        state = self.server.state
        if self.headers.get("Authorization", "") != f"Bearer {state.meta_token}":
            return self._json(
                401,
                {
                    "error": {
                        "message": "Error validating access token: Session has expired.",
                        "type": "OAuthException",
                        "code": 190,
                        "error_subcode": 463,
                        "fbtrace_id": "AkT2m8Q1rJf5nZy7cW0xVdP",
                    }
                },
            )
        if state.listing_answers:
            status, answer = state.listing_answers.pop(0)
            return self._json(status, answer)
        templates = state.meta_templates.get(waba_id, [])
        after = query.get("after", [""])[0]
        offset = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        start, end = self._page_bounds(offset, int(query.get("limit", ["25"])[0]), len(templates))
        fields = query.get("fields", [""])[0]
        page = [
            {k: v for k, v in t.items() if not fields or k in fields.split(",")}
            for t in templates[start:end]
        ]
        cursor = base64.urlsafe_b64encode(str(end).encode()).decode()
        paging: dict[str, Any] = {
            "cursors": {
                "before": base64.urlsafe_b64encode(str(start).encode()).decode(),
                "after": cursor,
            }
        }
        if end < len(templates):
            next_query = urlencode({"fields": fields, "limit": end - start, "after": cursor})
            paging["next"] = f"{base}/{version}/{waba_id}/message_templates?{next_query}"
        return self._json(200, {"data": page, "paging": paging})

    def _twilio_messages(self, account_sid: str, query: dict[str, list[str]], base: str) -> None:
        state = self.server.state
        expected = "Basic " + base64.b64encode(":".join(state.twilio_auth).encode()).decode()
        if self.headers.get("Authorization", "") != expected:
            return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        if state.listing_answers:
            status, answer = state.listing_answers.pop(0)
            return self._json(status, answer)
        to = query.get("To", [""])[0]
        sender = query.get("From", [""])[0]
        found = [
            m
            for m in reversed(state.twilio_messages)
            if m["account_sid"] == account_sid
            and (not to or m["to"] == to)
            and (not sender or m["from"] == sender)
        ]
        size = int(query.get("PageSize", ["50"])[0])
        path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        return self._json(
            200,
            {
                "messages": found[:size],
                "end": min(size, len(found)) - 1,
                "first_page_uri": f"{path}?PageSize={size}&Page=0",
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{path}?PageSize={size}&Page=0",
            },
        )

    def _meta_status_report(self, phone_number_id: str, wamid: str, request: Any) -> None:
        """Meta's `sent` status webhook for an accepted message, signed with the app secret."""
        state = self.server.state
        status: dict[str, Any] = {
            "id": wamid,
            "status": "sent",
            "timestamp": str(int(time.time())),
            "recipient_id": str(request.get("to", "")),
            "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
        }
        if "biz_opaque_callback_data" in request:
            status["biz_opaque_callback_data"] = request["biz_opaque_callback_data"]
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "statuses": [status],
        }
        body = json.dumps(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": "0", "changes": [{"field": "messages", "value": value}]}],
            }
        ).encode()
        digest = hmac.new(state.status_webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        url = state.status_webhook_url

        def post() -> None:
            # After our answer, and again until answered 200, as Meta retries.
            for attempt in range(10):
                time.sleep(0.1 * 2**attempt)
                outgoing = Request(
                    url,
                    data=body,
                    method="POST",
                    headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": f"sha256={digest}",
                    },
                )
                try:
                    with urlopen(outgoing, timeout=10) as response:
                        if response.status == 200:
                            state.statuses_reported.append(
                                (wamid, str(status.get("biz_opaque_callback_data", "")))
                            )
                            return
                except OSError:
                    continue

        threading.Thread(target=post, daemon=True).start()

    def _twilio_contents(self, query: dict[str, list[str]], base: str) -> None:
        state = self.server.state
        expected = "Basic " + base64.b64encode(":".join(state.twilio_auth).encode()).decode()
        if self.headers.get("Authorization", "") != expected:
            return self._json(
                401,
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
            )
        if state.listing_answers:
            status, answer = state.listing_answers.pop(0)
            return self._json(status, answer)
        contents = state.twilio_contents
        token = query.get("PageToken", ["PT0"])[0]
        requested = int(query.get("PageSize", ["50"])[0])
        start, end = self._page_bounds(int(token.removeprefix("PT")), requested, len(contents))
        page_number = int(query.get("Page", ["0"])[0])
        url = f"{base}/v1/ContentAndApprovals?PageSize={requested}&Page={page_number}"
        next_url = (
            f"{base}/v1/ContentAndApprovals?PageSize={requested}&Page={page_number + 1}"
            f"&PageToken=PT{end}"
            if end < len(contents)
            else None
        )
        return self._json(
            200,
            {
                "contents": contents[start:end],
                "meta": {
                    "page": page_number,
                    "page_size": requested,
                    "first_page_url": f"{base}/v1/ContentAndApprovals?PageSize={requested}&Page=0",
                    "previous_page_url": None,
                    "url": url,
                    "next_page_url": next_url,
                    "key": "contents",
                },
            },
        )

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        state.requests.append(RecordedRequest("POST", self.path, dict(self.headers.items()), body))
        auth = self.headers.get("Authorization", "")
        if state.send_latency:
            time.sleep(state.send_latency)
        # Meta: POST /{version}/{phone-number-id}/messages
        if re.fullmatch(r"/v[\d.]+/\w+/messages", self.path):
            if auth != f"Bearer {state.meta_token}":
                return self._json(
                    401,
                    {
                        "error": {
                            "message": "Invalid OAuth access token.",
                            "type": "OAuthException",
                            "code": 190,
                            "fbtrace_id": "AkT2m8Q1rJf5nZy7cW0xVdP",
                        }
                    },
                )
            if state.send_errors:
                status, error = state.send_errors.pop(0)
                return self._json(status, error)
            try:
                request = json.loads(body)
                to = request["to"]
            except (ValueError, KeyError):
                return self._json(
                    400,
                    {
                        "error": {
                            "message": "(#100) Invalid parameter",
                            "type": "OAuthException",
                            "code": 100,
                        }
                    },
                )
            wamid = f"wamid.FAKE{uuid.uuid4().hex}"
            if state.status_webhook_url:
                self._meta_status_report(self.path.split("/")[2], wamid, request)
            return self._json(
                200,
                {
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": wamid, "message_status": "accepted"}],
                },
            )
        # Twilio: POST /2010-04-01/Accounts/{AccountSid}/Messages.json (form-encoded)
        if match := re.fullmatch(r"/2010-04-01/Accounts/(\w+)/Messages\.json", self.path):
            expected = "Basic " + base64.b64encode(":".join(state.twilio_auth).encode()).decode()
            if auth != expected:
                return self._json(
                    401,
                    {
                        "code": 20003,
                        "message": "Authenticate",
                        "more_info": "https://www.twilio.com/docs/errors/20003",
                        "status": 401,
                    },
                )
            if state.send_errors:
                status, error = state.send_errors.pop(0)
                return self._json(status, error)
            from urllib.parse import parse_qs

            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            sid = "SM" + uuid.uuid4().hex
            created = {
                "account_sid": match.group(1),
                "api_version": "2010-04-01",
                "body": form.get("Body", ""),
                "date_created": format_datetime(datetime.now(UTC)),
                "date_sent": None,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "sid": sid,
                "status": "queued",
                "to": form.get("To"),
                "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
            }
            state.twilio_messages.append(created)
            return self._json(201, created)
        return self._json(404, {"error": {"message": "Unknown path", "code": 100}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of concurrent sends connect at once, as they do to the real APIs.
    request_queue_size = 256
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
