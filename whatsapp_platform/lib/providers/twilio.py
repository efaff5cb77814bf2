"""Twilio's REST API through twilio-python, aimed at the configured base URLs.

One `Client` per account and auth token per process, each with its own pooled HTTP session and
an explicit timeout (twilio-python has none by default). Failures are classified from
`TwilioException` (newer RFC 9457 errors are not `TwilioRestException`s) and from requests'
connection errors and timeouts.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from whatsapp_platform.lib.providers.base import OutboundMessage, SendResult
from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    redact_numbers,
    refuse_if_past,
    transport_error,
)

if TYPE_CHECKING:
    from whatsapp_platform.models import Channel

# Twilio error codes (reference twilio-whatsapp.md §5). Anything not listed is permanent.
RETRYABLE_CODES = frozenset({20429, 63018})  # REST concurrency; channel rate limit
CREDENTIAL_CODES = frozenset({20003})  # authentication failed
MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")

# The hosts twilio-python calls, and the settings that can point them elsewhere.
_BASE_URL_SETTINGS = {
    "https://api.twilio.com": "TWILIO_API_BASE_URL",
    "https://content.twilio.com": "TWILIO_CONTENT_API_BASE_URL",
}


def is_account_media_url(url: str, account_sid: str) -> bool:
    """Only a media URL of this account's own messages gets the account's credentials, so a
    forged webhook cannot make us send them elsewhere."""
    base = re.escape(settings.TWILIO_API_BASE_URL.rstrip("/"))
    pattern = rf"^{base}/2010-04-01/Accounts/{re.escape(account_sid)}/Messages/\w+/Media/\w+$"
    return re.match(pattern, url) is not None


def rebase_url(url: str) -> str:
    for origin, setting in _BASE_URL_SETTINGS.items():
        if url == origin or url.startswith(f"{origin}/"):
            base: str = getattr(settings, setting)
            return base.rstrip("/") + url[len(origin) :]
    return url


class PlatformHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """twilio-python's HTTP client, with the configured base URLs and timeouts."""

    def request(  # type: ignore[no-untyped-def]
        self,
        method: str,
        url: str,
        params=None,
        data=None,
        headers=None,
        auth=None,
        timeout=None,
        allow_redirects: bool = False,
    ) -> Response:
        # Read at each call, so a settings change reaches the cached clients.
        self.timeout = (settings.PROVIDER_CONNECT_TIMEOUT, settings.PROVIDER_READ_TIMEOUT)
        return super().request(
            method,
            rebase_url(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            allow_redirects=allow_redirects,
        )


@functools.lru_cache(maxsize=256)
def _client(pid: int, account_sid: str, auth_token: str) -> Client:
    return Client(account_sid, auth_token, http_client=PlatformHttpClient())


def client_for(account_sid: str, auth_token: str) -> Client:
    """The cached client of this account in this process (a forked worker gets its own)."""
    return _client(os.getpid(), account_sid, auth_token)


def error_from_exception(exc: TwilioException, what: str) -> ProviderError:
    status: int | None = getattr(exc, "status", None)
    code: Any = getattr(exc, "code", None)
    text = getattr(exc, "msg", "") or getattr(exc, "detail", "") or getattr(exc, "title", "")
    if status is None and len(exc.args) > 1 and isinstance(exc.args[1], Response):
        # A failed page of a listing: twilio-python hands over the bare response.
        response = exc.args[1]
        status = response.status_code
        try:
            payload = json.loads(response.text)
        except ValueError:
            payload = {}
        code = payload.get("code", status) if isinstance(payload, dict) else status
        text = (payload.get("message") if isinstance(payload, dict) else "") or str(exc.args[0])
    try:
        code_number: int | None = int(code)
    except (TypeError, ValueError):
        code_number = None
    code_text = "" if code_number is None else str(code_number)
    message = redact_numbers(f"{what}: {text or type(exc).__name__}")
    if code_number in CREDENTIAL_CODES or status == 401:
        return ProviderCredentialError(message, code=code_text, status=status)
    if code_number in RETRYABLE_CODES or (status is not None and (status >= 500 or status == 429)):
        return ProviderRetryableError(message, code=code_text, status=status)
    return ProviderPermanentError(message, code=code_text, status=status)


def _whatsapp_address(to: str) -> str:
    return to if to.startswith("whatsapp:") else f"whatsapp:+{to.lstrip('+')}"


def _content_variables(parameters: list[Any]) -> str:
    """Twilio wants a JSON string: a dict is silently sent as `1`."""
    variables: dict[str, str] = {}
    for position, parameter in enumerate(parameters, start=1):
        if isinstance(parameter, dict):
            key = str(parameter.get("parameter_name") or position)
            variables[key] = str(parameter.get("text", ""))
        else:
            variables[str(position)] = str(parameter)
    return json.dumps(variables)


def message_params(channel: Channel, message: OutboundMessage) -> dict[str, Any]:
    """The arguments of `client.messages.create` for one outbound message.

    A `reply_to` is not sent: Twilio's Messages API has no way to quote a WhatsApp message.
    """
    content = message.content
    params: dict[str, Any] = {
        "to": _whatsapp_address(message.to),
        "status_callback": (
            f"{settings.PUBLIC_BASE_URL}{reverse('webhook-twilio-status')}"
            f"?message_id={message.message_id}"
        ),
    }
    if channel.messaging_service_sid:
        params["messaging_service_sid"] = channel.messaging_service_sid
    else:
        params["from_"] = channel.sender
    if message.type == "text":
        params["body"] = content.get("body", "")
    elif message.type == "template":
        template = content.get("template") or {}
        if not template.get("provider_template_id"):
            raise ProviderPermanentError(
                "A Twilio template message needs the template's Content SID (HX...): "
                "sync the channel's templates."
            )
        params["content_sid"] = template["provider_template_id"]
        if template.get("body_parameters"):
            params["content_variables"] = _content_variables(template["body_parameters"])
    elif message.type in MEDIA_TYPES:
        media = content.get("media") or {}
        if not media.get("link"):
            raise ProviderPermanentError(
                f"Twilio sends a {message.type} by its link only, not by a media id."
            )
        params["media_url"] = [media["link"]]
        if media.get("caption"):
            params["body"] = media["caption"]
    elif message.type == "interactive":
        raise ProviderPermanentError(
            "Twilio has no free-form interactive messages: send a Content template "
            "(quick reply or list picker) instead."
        )
    else:
        raise ProviderPermanentError(f"Twilio cannot send messages of type {message.type!r}.")
    return params


class TwilioBackend:
    def send(
        self, channel: Channel, message: OutboundMessage, *, not_after: float | None = None
    ) -> SendResult:
        params = message_params(channel, message)
        # The twilio library has no hook at its first byte: the deadline is checked just before.
        refuse_if_past(not_after)
        try:
            created = client_for(channel.account_sid, channel.auth_token).messages.create(**params)
        except TwilioException as exc:
            raise error_from_exception(exc, "Send") from exc
        except requests.RequestException as exc:
            raise transport_error(exc, "Send", send=True) from exc
        return SendResult(provider_message_id=str(created.sid))


def messages_created_since(channel: Channel, *, to: str, since: datetime) -> list[str]:
    """The SIDs of the channel's outbound messages to `to` that Twilio created at or after
    `since`, oldest first (at most the 20 newest are looked at).

    Twilio calls back for `sent`, `delivered` and `failed`, but not for a message it still
    holds `queued` or `accepted`: whether it has a send whose answer was lost is asked of its
    Messages resource instead. `DateSent` is no filter here (a day at a time, and empty until
    sent), so the recipient and sender narrow the listing and the creation time is compared.
    """
    client = client_for(channel.account_sid, channel.auth_token)
    filters: dict[str, Any] = {"to": _whatsapp_address(to)}
    if not channel.messaging_service_sid:
        filters["from_"] = channel.sender
    try:
        listed = client.messages.list(**filters, limit=20, page_size=20)
    except TwilioException as exc:
        raise error_from_exception(exc, "Message listing") from exc
    except requests.RequestException as exc:
        raise transport_error(exc, "Message listing", send=False) from exc
    found = [
        item
        for item in listed
        if str(item.direction or "").startswith("outbound")
        and item.date_created is not None
        and item.date_created >= since
        and (
            not channel.messaging_service_sid
            or item.messaging_service_sid == channel.messaging_service_sid
        )
    ]
    return [str(item.sid) for item in sorted(found, key=lambda item: item.date_created)]


def content_and_approvals(
    account_sid: str, auth_token: str, page_size: int = 100
) -> Iterator[dict[str, Any]]:
    """Every Content template of the account with its WhatsApp approval, page after page."""
    listing = client_for(account_sid, auth_token).content.v1.content_and_approvals
    try:
        for item in listing.stream(page_size=page_size):
            yield {
                "sid": item.sid,
                "friendly_name": item.friendly_name or "",
                "language": item.language or "",
                "variables": item.variables or {},
                "types": item.types or {},
                "approval_requests": item.approval_requests or {},
            }
    except TwilioException as exc:
        raise error_from_exception(exc, "Content listing") from exc
    except requests.RequestException as exc:
        raise transport_error(exc, "Content listing", send=False) from exc
