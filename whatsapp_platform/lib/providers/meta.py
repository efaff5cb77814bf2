"""Meta's Graph API (base URL and version from settings, so tests use a local server).

Sends go through one pooled urllib3 `PoolManager` per process, with connect and read timeouts:
campaigns send hundreds of messages a second, and a new TLS connection per message would cost
more than the send. urllib3 is what requests is built on; called directly it takes about a
third of the CPU per call (no session, cookie or environment merging), which is what bounds a
worker process at those rates. Other Graph calls (template listings, media lookups) are rare
and use requests. Failures are classified by Graph's `error.code`, never by the HTTP status
alone: Meta answers throttling with HTTP 400.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter

from whatsapp_platform.lib.providers.base import OutboundMessage, SendResult
from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    redact_numbers,
    refuse_if_past,
    retry_after_header,
    send_transport_error,
    transport_error,
)
from whatsapp_platform.lib.providers.http import get_json

if TYPE_CHECKING:
    from whatsapp_platform.models import Channel

# Graph error codes (reference meta-cloud-api.md §6.4). Anything not listed is permanent.
RETRYABLE_CODES = frozenset(
    {
        1,  # unknown error
        2,  # service temporarily unavailable
        4,  # app-level API call rate limit
        80007,  # WABA rate limit
        130429,  # throughput limit of the number
        131000,  # something went wrong
        131016,  # service unavailable
        131056,  # pair rate limit: too many messages to one user
        131057,  # account in maintenance mode
        133016,  # register/deregister rate limit
    }
)
CREDENTIAL_CODES = frozenset({0, 10, 190, *range(200, 300)})
PAIR_RATE_LIMIT = 131056
MAINTENANCE = 131057

MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
# Captions exist on these media types only; a filename on documents only.
CAPTIONED = frozenset({"image", "video", "document"})
TEMPLATE_FIELDS = "id,name,language,status,category,components,rejected_reason"


def graph_url(path: str) -> str:
    return (
        f"{settings.META_GRAPH_API_BASE_URL}/{settings.META_GRAPH_API_VERSION}/{path.lstrip('/')}"
    )


def auth_headers(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def media_info(media_id: str, access_token: str) -> dict[str, Any]:
    """`{url, mime_type, sha256, file_size, id}`; the URL lives 5 minutes and needs the token."""
    return get_json(graph_url(media_id), headers=auth_headers(access_token))


_session_lock = threading.Lock()
_session: tuple[int, requests.Session] | None = None
_send_pool: tuple[int, urllib3.PoolManager] | None = None


def session() -> requests.Session:
    """This process's pooled session for the rare calls (listings, lookups); a forked worker
    builds its own instead of sharing sockets."""
    global _session
    with _session_lock:
        if _session is None or _session[0] != os.getpid():
            new = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8)
            new.mount("https://", adapter)
            new.mount("http://", adapter)
            _session = (os.getpid(), new)
        return _session[1]


# The deadline of the send this thread is making (send_call's `not_after`), until its first byte.
_first_byte = threading.local()


def _refuse_if_late(connection: urllib3.connection.HTTPConnection) -> None:
    """Before the first bytes of a send leave: past its deadline, SendSlotMissed. A new
    connection's handshake comes first, so only the request itself is timed; once those bytes
    are out, nothing can stop it. Checked here, at the socket, a call that waited for a core or
    for the GIL on its way does not start later than its pacing allows."""
    not_after = getattr(_first_byte, "not_after", None)
    if not_after is None:
        return
    _first_byte.not_after = None
    if connection.sock is None:
        connection.connect()
    refuse_if_past(not_after)


class _PacedHTTPConnection(urllib3.connection.HTTPConnection):
    def send(self, data: Any) -> None:
        _refuse_if_late(self)
        super().send(data)


class _PacedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def send(self, data: Any) -> None:
        _refuse_if_late(self)
        super().send(data)


class _PacedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PacedHTTPConnection


class _PacedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PacedHTTPSConnection


def send_pool() -> urllib3.PoolManager:
    """This process's connections for sends: as many kept alive as it makes calls at once
    (MESSAGE_SEND_CONCURRENCY), so none is thrown away. A forked worker builds its own.

    Like requests, it verifies against REQUESTS_CA_BUNDLE or certifi's bundle, and goes through
    the proxy the environment names for the Graph API's address, if any.
    """
    global _send_pool
    with _session_lock:
        if _send_pool is None or _send_pool[0] != os.getpid():
            options: dict[str, Any] = {
                "num_pools": 4,
                "maxsize": max(32, settings.MESSAGE_SEND_CONCURRENCY),
                # As requests has it: no retry on a connection error, and never a send
                # repeated once its request went out (its outcome is unknown).
                "retries": urllib3.Retry(0, read=False, redirect=False),
                "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE")
                or requests.utils.DEFAULT_CA_BUNDLE_PATH,
            }
            base = settings.META_GRAPH_API_BASE_URL
            proxy = requests.utils.get_environ_proxies(base).get(base.split(":", 1)[0])
            pool = (
                urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
            )
            pool.pool_classes_by_scheme = {
                "http": _PacedHTTPConnectionPool,
                "https": _PacedHTTPSConnectionPool,
            }
            _send_pool = (os.getpid(), pool)
        return _send_pool[1]


def timeout() -> tuple[float, float]:
    return (settings.PROVIDER_CONNECT_TIMEOUT, settings.PROVIDER_READ_TIMEOUT)


def error_from_response(response: requests.Response, what: str) -> ProviderError:
    """The classified error of a failed Graph call."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_answer(response.status_code, body, response.headers, what)


def error_from_answer(
    status: int, body: Any, headers: Mapping[str, str], what: str
) -> ProviderError:
    """The classified error of a Graph answer: its HTTP status, JSON body and headers."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        # No Graph error object: a proxy or an outage answered.
        cls = ProviderRetryableError if status >= 500 or status == 429 else ProviderPermanentError
        return cls(
            f"{what}: HTTP {status}",
            status=status,
            retry_after=retry_after_header(headers),
        )
    try:
        code: int | None = int(error.get("code"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        code = None
    text = f"{what}: {error.get('message') or 'error'}"
    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    if details:
        text = f"{text} ({details})"
    text = redact_numbers(text)
    code_text = "" if code is None else str(code)
    if code in CREDENTIAL_CODES:
        return ProviderCredentialError(text, code=code_text, status=status)
    if code in RETRYABLE_CODES or status >= 500:
        retry_after = retry_after_header(headers)
        if code == PAIR_RATE_LIMIT:
            retry_after = settings.PAIR_RATE_SECONDS
        elif code == MAINTENANCE and retry_after is None:
            retry_after = 60.0  # Meta: maintenance lasts up to a minute
        return ProviderRetryableError(text, code=code_text, status=status, retry_after=retry_after)
    return ProviderPermanentError(text, code=code_text, status=status)


def call(
    method: str,
    url: str,
    access_token: str,
    *,
    what: str,
    json: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One Graph API call; the JSON answer, or a classified error."""
    try:
        response = session().request(
            method,
            url,
            json=json,
            params=params,
            headers=auth_headers(access_token),
            timeout=timeout(),
        )
    except requests.RequestException as exc:
        raise transport_error(exc, what, send=method == "POST") from exc
    if response.status_code >= 400:
        raise error_from_response(response, what)
    try:
        body: dict[str, Any] = response.json()
    except ValueError as exc:
        raise ProviderPermanentError(
            f"{what}: the answer is not JSON", status=response.status_code
        ) from exc
    return body


def send_call(
    url: str, access_token: str, payload: dict[str, Any], *, not_after: float | None = None
) -> dict[str, Any]:
    """One send: `POST` the payload; the JSON answer, or a classified error. Past `not_after`
    (`time.monotonic()`) before its first byte left, SendSlotMissed and nothing was sent."""
    what = "Send"
    request = orjson.dumps(payload)
    _first_byte.not_after = not_after
    try:
        response = send_pool().request(
            "POST",
            url,
            body=request,
            headers={**auth_headers(access_token), "Content-Type": "application/json"},
            timeout=urllib3.Timeout(
                connect=settings.PROVIDER_CONNECT_TIMEOUT, read=settings.PROVIDER_READ_TIMEOUT
            ),
        )
    except urllib3.exceptions.HTTPError as exc:
        raise send_transport_error(exc, what) from exc
    finally:
        _first_byte.not_after = None
    try:
        body = orjson.loads(response.data)
    except orjson.JSONDecodeError:
        body = None
    if response.status >= 400:
        raise error_from_answer(response.status, body, response.headers, what)
    if not isinstance(body, dict):
        raise ProviderPermanentError(f"{what}: the answer is not JSON", status=response.status)
    return body


def _media_object(media: dict[str, Any], media_type: str) -> dict[str, Any]:
    if media.get("media_id"):
        obj: dict[str, Any] = {"id": str(media["media_id"])}
    elif media.get("link"):
        obj = {"link": media["link"]}
    else:
        raise ProviderPermanentError(f"A {media_type} message needs a link or a media id.")
    if media.get("caption") and media_type in CAPTIONED:
        obj["caption"] = media["caption"]
    if media.get("filename") and media_type == "document":
        obj["filename"] = media["filename"]
    return obj


def _text_parameter(value: Any) -> dict[str, Any]:
    """A plain value is a text parameter; a dict is already a Graph parameter (named,
    currency, date_time)."""
    if isinstance(value, dict):
        return value
    return {"type": "text", "text": str(value)}


def _button_parameter(sub_type: str, value: Any) -> dict[str, Any]:
    if sub_type == "quick_reply":
        return {"type": "payload", "payload": str(value)}
    if sub_type == "copy_code":
        return {"type": "coupon_code", "coupon_code": str(value)}
    return {"type": "text", "text": str(value)}


def _template_object(template: dict[str, Any]) -> dict[str, Any]:
    if not template.get("name"):
        raise ProviderPermanentError("A template message needs the template's name.")
    components: list[dict[str, Any]] = []
    header = template.get("header")
    if header:
        header_type = header.get("type", "text")
        if header_type == "text":
            parameters = [_text_parameter(p) for p in header.get("parameters", [])]
        else:
            parameters = [{"type": header_type, header_type: _media_object(header, header_type)}]
        components.append({"type": "header", "parameters": parameters})
    body_parameters = template.get("body_parameters") or []
    if body_parameters:
        components.append(
            {"type": "body", "parameters": [_text_parameter(p) for p in body_parameters]}
        )
    for button in template.get("buttons") or []:
        sub_type = button.get("sub_type", "quick_reply")
        components.append(
            {
                "type": "button",
                "sub_type": sub_type,
                "index": str(button.get("index", 0)),
                "parameters": [_button_parameter(sub_type, button.get("parameter", ""))],
            }
        )
    obj: dict[str, Any] = {
        "name": template["name"],
        "language": {"code": template.get("language") or "en_US"},
    }
    if components:
        obj["components"] = components
    return obj


def message_payload(message: OutboundMessage) -> dict[str, Any]:
    """The JSON body of `POST /{phone_number_id}/messages` for one outbound message."""
    content = message.content
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to,
        "type": message.type,
        # Status webhooks carry this back, so they can name our message.
        "biz_opaque_callback_data": str(message.message_id),
    }
    if content.get("reply_to"):
        payload["context"] = {"message_id": content["reply_to"]}
    if message.type == "text":
        payload["text"] = {
            "body": content.get("body", ""),
            "preview_url": bool(content.get("preview_url", False)),
        }
    elif message.type == "template":
        payload["template"] = _template_object(content.get("template") or {})
    elif message.type in MEDIA_TYPES:
        payload[message.type] = _media_object(content.get("media") or {}, message.type)
    elif message.type == "interactive":
        if not content.get("interactive"):
            raise ProviderPermanentError("An interactive message needs its interactive object.")
        payload["interactive"] = content["interactive"]
    else:
        raise ProviderPermanentError(f"Meta cannot send messages of type {message.type!r}.")
    return payload


class MetaBackend:
    def send(
        self, channel: Channel, message: OutboundMessage, *, not_after: float | None = None
    ) -> SendResult:
        body = send_call(
            graph_url(f"{channel.phone_number_id}/messages"),
            channel.access_token,
            message_payload(message),
            not_after=not_after,
        )
        try:
            provider_message_id = str(body["messages"][0]["id"])
        except (KeyError, IndexError, TypeError) as exc:
            # Accepted, but with no id to track it by: sending again could deliver it twice.
            raise ProviderPermanentError("Send: the answer names no message id") from exc
        contacts = body.get("contacts") or [{}]
        return SendResult(
            provider_message_id=provider_message_id, wa_id=str(contacts[0].get("wa_id") or "")
        )


def message_templates(
    waba_id: str, access_token: str, page_size: int = 100
) -> Iterator[dict[str, Any]]:
    """Every template of a WhatsApp Business Account, following `paging.next` to the end."""
    url: str | None = graph_url(f"{waba_id}/message_templates")
    params: dict[str, Any] | None = {"fields": TEMPLATE_FIELDS, "limit": page_size}
    while url:
        body = call("GET", url, access_token, what="Template listing", params=params)
        yield from body.get("data") or []
        next_url = (body.get("paging") or {}).get("next")
        if next_url and not next_url.startswith(f"{settings.META_GRAPH_API_BASE_URL}/"):
            # The token goes along with the request: only ever to the Graph API.
            raise ProviderPermanentError("Template listing: the next page is not on the Graph API")
        url, params = next_url, None  # the next URL carries the query
