"""The webhook hot path: verify, store, answer. Processing happens in the `incoming` queue."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST
from prometheus_client import Counter

from webhooks import parsing
from webhooks.metrics import webhooks_received
from webhooks.models import WebhookEvent
from webhooks.selectors import meta_app_secrets, meta_channels_named
from webhooks.services import webhook_event_record
from webhooks.signature import meta_signature_valid, twilio_signature_valid
from whatsapp_platform.models import Channel

logger = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


@functools.cache
def _received(provider: str, result: str) -> Counter:
    """The counter of one provider's deliveries with one result (looked up once a process)."""
    return webhooks_received.labels(provider=provider, result=result)


def _refuse(provider: str, status: int, message: str, result: str) -> JsonResponse:
    _received(provider, result).inc()
    return JsonResponse({"error": message}, status=status)


def _guard(provider: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Bad input gets a clear 4xx; an unreachable database a 503, so the provider retries."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return _refuse(provider, 400, "Invalid Content-Length.", "bad_request")
            if length > settings.WEBHOOK_MAX_BODY_BYTES:
                return _refuse(provider, 413, "The body is over 4 MiB.", "too_large")
            try:
                return view(request, *args, **kwargs)
            except RequestDataTooBig:
                return _refuse(provider, 413, "The body is over 4 MiB.", "too_large")
            except DatabaseError:
                logger.exception("Database unavailable: %s webhook answered 503", provider)
                response = _refuse(provider, 503, "Temporarily unavailable.", "unavailable")
                response["Retry-After"] = "30"
                return response

        return wrapper

    return decorator


# --- Meta -----------------------------------------------------------------------------------


def _meta_verify(request: HttpRequest) -> HttpResponse:
    mode = request.GET.get("hub.mode", "")
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    if mode == "subscribe" and token:
        channels = Channel.objects.filter(provider=Channel.Provider.META, is_active=True).exclude(
            webhook_verify_token=""
        )
        for channel in channels:
            if hmac.compare_digest(channel.webhook_verify_token.encode(), token.encode()):
                return HttpResponse(challenge, content_type="text/plain")
    return HttpResponse("Verification failed.", status=403, content_type="text/plain")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@_guard("meta")
def meta_webhook(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _meta_verify(request)
    if request.content_type != "application/json":
        return _refuse("meta", 415, "Send application/json.", "unsupported_media_type")
    body = request.body
    try:
        payload = parsing.parse_meta_body(body)
    except parsing.PayloadError as exc:
        return _refuse("meta", 400, str(exc), "bad_request")
    signature = request.META.get("HTTP_X_HUB_SIGNATURE_256", "")
    if not signature:
        return _refuse("meta", 403, "Missing X-Hub-Signature-256.", "invalid_signature")
    numbers, waba_ids = parsing.meta_routes(payload)
    named = meta_channels_named(phone_number_ids=numbers, waba_ids=waba_ids)
    if named:
        signed = {
            secret: meta_signature_valid(body, signature, secret)
            for secret in {c.app_secret for c in named}
        }
        signers = [c for c in named if signed[c.app_secret]]
        # A number's own channel must have signed what names it: one tenant's secret never
        # vouches for another tenant's number. A WABA id can be on several tenants' channels
        # (an agency, or a mistake), so one of them signing is enough: processing applies the
        # items only for the tenants whose secret signed, and nobody can block another's.
        numbers_signed = all(signed[c.app_secret] for c in named if c.phone_number_id in numbers)
        if not signers or not numbers_signed:
            return _refuse("meta", 403, "Invalid signature.", "invalid_signature")
        organizations = {c.organization_id for c in signers}
        organization_id = organizations.pop() if len(organizations) == 1 else None
    else:
        # No channel for this number yet: keep it if any of our app secrets signed it.
        secrets = {c.app_secret for c in meta_app_secrets()}
        if not any(meta_signature_valid(body, signature, secret) for secret in secrets):
            return _refuse("meta", 403, "Invalid signature.", "invalid_signature")
        organization_id = None
    event_id = webhook_event_record(
        provider=WebhookEvent.Provider.META,
        body=body,
        kind=parsing.meta_kind(payload),
        organization_id=organization_id,
        signature=signature,
    )
    _received("meta", "accepted" if event_id else "duplicate").inc()
    return HttpResponse("OK", content_type="text/plain")


# --- Twilio ---------------------------------------------------------------------------------


def _twilio_channel(request: HttpRequest, *, inbound: bool) -> Channel | None:
    params = request.POST
    account_sid = params.get("AccountSid", "")
    if not account_sid:
        return None
    sender = parsing.twilio_sender(params, inbound=inbound)
    service = params.get("MessagingServiceSid", "")
    # PostgreSQL refuses NUL in a query, and no channel's ids hold one.
    if "\x00" in account_sid:
        return None
    channels = Channel.objects.filter(provider=Channel.Provider.TWILIO, account_sid=account_sid)
    by_sender = channels.filter(sender=sender).first() if "\x00" not in sender else None
    return by_sender or (
        channels.filter(messaging_service_sid=service).first()
        if service and "\x00" not in service
        else None
    )


def _twilio_webhook(request: HttpRequest, *, inbound: bool) -> HttpResponse:
    if request.content_type != "application/x-www-form-urlencoded":
        return _refuse(
            "twilio", 415, "Send application/x-www-form-urlencoded.", "unsupported_media_type"
        )
    body = request.body
    if b"\x00" in body:  # a text column cannot hold it; a form encoder sends %00
        return _refuse("twilio", 400, "The body holds a NUL byte: encode it as %00.", "bad_request")
    channel = _twilio_channel(request, inbound=inbound)
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    if channel is None or not twilio_signature_valid(
        url, request.POST, signature, channel.auth_token
    ):
        return _refuse("twilio", 403, "Invalid signature.", "invalid_signature")
    if not inbound and request.GET.get("message_id"):
        # Our message id comes only in the callback URL we gave Twilio; it is stored with the
        # parameters so that processing can reconcile a send whose outcome was unknown.
        body += b"&" + urlencode({"message_id": request.GET["message_id"]}).encode()
    try:
        if inbound:
            parsing.parse_twilio_inbound(request.POST)
        else:
            parsing.parse_twilio_status(request.POST)
    except parsing.PayloadError as exc:
        return _refuse("twilio", 400, str(exc), "bad_request")
    event_id = webhook_event_record(
        provider=WebhookEvent.Provider.TWILIO,
        body=body,
        kind=WebhookEvent.Kind.MESSAGES if inbound else WebhookEvent.Kind.STATUSES,
        channel=channel,
        signature=signature,
    )
    _received("twilio", "accepted" if event_id else "duplicate").inc()
    if inbound:
        return HttpResponse(EMPTY_TWIML, content_type="text/xml")
    return HttpResponse(status=200)


@csrf_exempt
@require_POST
@_guard("twilio")
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    return _twilio_webhook(request, inbound=True)


@csrf_exempt
@require_POST
@_guard("twilio")
def twilio_status(request: HttpRequest) -> HttpResponse:
    return _twilio_webhook(request, inbound=False)
