"""Provider payloads turned into plain, typed items. No database, no network.

Parsing is lenient: providers add fields without notice, so unknown fields are ignored and an
unknown item becomes an `UnknownItem` instead of an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from conversations.types import InboundMessage, MediaRef, StatusUpdate


class PayloadError(ValueError):
    """The body is not a webhook of the expected shape (answered 400)."""


@dataclass(frozen=True)
class TemplateStatusUpdate:
    waba_id: str
    name: str
    language: str
    status: str
    reason: str
    template_id: str


@dataclass(frozen=True)
class PreferenceUpdate:
    """A user's marketing-message preference (Meta `user_preferences`)."""

    wa_id: str | None
    user_id: str | None
    stop: bool


@dataclass(frozen=True)
class UnknownItem:
    field_name: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Routed:
    """One item and the number it belongs to (a Meta phone_number_id, a WABA or a Twilio sender)."""

    route: str
    item: InboundMessage | StatusUpdate | TemplateStatusUpdate | PreferenceUpdate | UnknownItem


def _our_message_id(value: Any) -> int | None:
    """Our outbound message id as we sent it along (a decimal string), else None."""
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# Column sizes of what an item names (conversations' models): longer values are cut to fit,
# and a WhatsApp id that does not fit is no WhatsApp id (E.164 has at most 15 digits).
WA_ID_MAX = 20
_LIMITS = {
    "provider_message_id": 200,
    "user_id": 160,
    "profile_name": 200,
    "username": 100,
    "error_code": 20,
    "reply_to_provider_id": 200,
}
_MEDIA_LIMITS = {"media_id": 200, "url": 2000, "mime_type": 100, "filename": 255}


def _fitted(item: Any, limits: Mapping[str, int]) -> Any:
    changes = {
        name: getattr(item, name)[:limit]
        for name, limit in limits.items()
        if hasattr(item, name) and len(getattr(item, name) or "") > limit
    }
    return replace(item, **changes) if changes else item


def _bounded_inbound(inbound: InboundMessage) -> InboundMessage:
    fitted: InboundMessage = _fitted(inbound, _LIMITS)
    if fitted.wa_id and len(fitted.wa_id) > WA_ID_MAX:
        fitted = replace(fitted, wa_id=None)
    if fitted.media is not None:
        fitted = replace(fitted, media=_fitted(fitted.media, _MEDIA_LIMITS))
    return fitted


def _bounded_status(update: StatusUpdate) -> StatusUpdate:
    fitted: StatusUpdate = _fitted(update, _LIMITS)
    return fitted


# The delivery statuses a message records; providers report others (Meta's `played`), which
# are stored with their event and otherwise ignored.
TRACKED_STATUSES = frozenset({"queued", "sending", "sent", "delivered", "read", "failed"})
# The template statuses a template records (campaigns' MessageTemplate.Status); Meta reports
# others (FLAGGED, IN_APPEAL, PENDING_DELETION...), which are stored and otherwise ignored.
TRACKED_TEMPLATE_STATUSES = frozenset({"approved", "pending", "rejected", "paused", "disabled"})


# --- Meta -----------------------------------------------------------------------------------

META_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")


def _without_nul(value: Any) -> Any:
    """The value with every NUL character removed: PostgreSQL stores none, in text or JSON."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def parse_meta_body(body: bytes) -> dict[str, Any]:
    try:
        # Meta sends UTF-8; json.loads would also take UTF-16 and -32, which are not stored.
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        raise PayloadError("The body is not a WhatsApp webhook: it has no `entry` list.")
    # JSON can carry NUL only as the escape `\u0000` (a raw control character is invalid), so a
    # body without it needs no walk through every value.
    if b"\\u0000" not in body:
        return payload
    return _without_nul(payload)  # type: ignore[no-any-return]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def meta_routes(payload: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The phone_number_ids and WABA ids a Meta payload names, to find its channels."""
    phone_number_ids: set[str] = set()
    waba_ids: set[str] = set()
    for entry in _dicts(payload.get("entry")):
        if entry.get("id"):
            waba_ids.add(str(entry["id"]))
        for change in _dicts(entry.get("changes")):
            number = _dict(_dict(change.get("value")).get("metadata")).get("phone_number_id")
            if number:
                phone_number_ids.add(str(number))
    return phone_number_ids, waba_ids


def meta_kind(payload: Mapping[str, Any]) -> str:
    """What a Meta delivery is mostly about, for the admin's filters."""
    kinds = set()
    for entry in _dicts(payload.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = _dict(change.get("value"))
            if change.get("field") == "message_template_status_update":
                kinds.add("template_status")
            elif value.get("messages"):
                kinds.add("messages")
            elif value.get("statuses"):
                kinds.add("statuses")
    for kind in ("messages", "statuses", "template_status"):
        if kind in kinds:
            return kind
    return "other"


def _meta_text(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    obj = _dict(message.get(kind)) if isinstance(kind, str) else {}
    if kind == "text":
        return str(obj.get("body", ""))
    if kind in META_MEDIA_TYPES:
        return str(obj.get("caption", ""))
    if kind == "button":
        return str(obj.get("text", ""))
    if kind == "interactive":
        return str(_dict(obj.get(obj.get("type", ""))).get("title", ""))
    if kind == "reaction":
        return str(obj.get("emoji", ""))
    if kind == "location":
        return str(obj.get("name") or obj.get("address") or "")
    if kind == "system":
        return str(obj.get("body", ""))
    return ""


def _meta_message(message: dict[str, Any], contacts: list[dict[str, Any]]) -> InboundMessage:
    wa_id = message.get("from") or None
    user_id = message.get("from_user_id") or None
    profile_name = username = ""
    for contact in contacts:
        if (wa_id and contact.get("wa_id") == wa_id) or (
            user_id and contact.get("user_id") == user_id
        ):
            wa_id = wa_id or contact.get("wa_id") or None
            user_id = user_id or contact.get("user_id") or None
            profile = _dict(contact.get("profile"))
            profile_name = str(profile.get("name", ""))
            username = str(profile.get("username", ""))
            break
    kind = str(message.get("type") or "unsupported")
    media = None
    if kind in META_MEDIA_TYPES and isinstance(message.get(kind), dict):
        obj = message[kind]
        media = MediaRef(
            media_id=str(obj.get("id", "")),
            url=str(obj.get("url", "")),
            mime_type=str(obj.get("mime_type", "")),
            filename=str(obj.get("filename", "")),
        )
    context = _dict(message.get("context"))
    errors = _dicts(message.get("errors"))
    return InboundMessage(
        provider_message_id=str(message.get("id", "")),
        wa_id=str(wa_id) if wa_id else None,
        user_id=str(user_id) if user_id else None,
        profile_name=profile_name,
        username=username,
        type=kind,
        text=_meta_text(message),
        content=message,
        timestamp=_timestamp(message.get("timestamp")),
        reply_to_provider_id=str(context.get("id", "")) or None,
        media=media,
        error_code=str(errors[0].get("code", "")) if errors else "",
        error_message=str(errors[0].get("title") or errors[0].get("message") or "")
        if errors
        else "",
    )


def _meta_status(status: dict[str, Any]) -> StatusUpdate:
    errors = _dicts(status.get("errors"))
    error = errors[0] if errors else {}
    error_data = _dict(error.get("error_data"))
    extra = {key: status[key] for key in ("conversation", "pricing") if key in status}
    return StatusUpdate(
        provider_message_id=str(status.get("id", "")),
        status=str(status.get("status", "")),
        timestamp=_timestamp(status.get("timestamp")),
        error_code=str(error.get("code", "")) if error else "",
        error_title=str(error.get("title") or error.get("message") or ""),
        error_details=str(error_data.get("details", "")),
        extra=extra,
        our_message_id=_our_message_id(status.get("biz_opaque_callback_data")),
    )


def iter_meta_items(payload: Mapping[str, Any]) -> Iterator[Routed]:
    for entry in _dicts(payload.get("entry")):
        waba_id = str(entry.get("id", ""))
        for change in _dicts(entry.get("changes")):
            field_name = str(change.get("field", ""))
            value = _dict(change.get("value"))
            metadata = _dict(value.get("metadata"))
            route = str(metadata.get("phone_number_id", ""))
            if field_name == "messages":
                contacts = _dicts(value.get("contacts"))
                for message in _dicts(value.get("messages")):
                    yield Routed(route, _bounded_inbound(_meta_message(message, contacts)))
                for status in _dicts(value.get("statuses")):
                    update = _bounded_status(_meta_status(status))
                    # e.g. `played` for voice notes: nothing the platform tracks.
                    yield Routed(
                        route,
                        update
                        if update.status in TRACKED_STATUSES
                        else UnknownItem("statuses", {"status": update.status}),
                    )
                for error in _dicts(value.get("errors")):
                    yield Routed(route, UnknownItem("errors", error))
            elif field_name == "message_template_status_update":
                template_status = str(value.get("event", "")).lower()
                if template_status not in TRACKED_TEMPLATE_STATUSES:
                    yield Routed(waba_id, UnknownItem(field_name, {"event": template_status}))
                    continue
                yield Routed(
                    waba_id,
                    TemplateStatusUpdate(
                        waba_id=waba_id,
                        name=str(value.get("message_template_name", "")),
                        language=str(value.get("message_template_language", "")),
                        status=template_status,
                        reason=""
                        if value.get("reason") in (None, "NONE")
                        else str(value["reason"]),
                        template_id=str(value.get("message_template_id", "")),
                    ),
                )
            elif field_name == "user_preferences":
                for preference in _dicts(value.get("user_preferences")):
                    if preference.get("category") != "marketing_messages":
                        continue
                    yield Routed(
                        route,
                        PreferenceUpdate(
                            wa_id=str(preference["wa_id"]) if preference.get("wa_id") else None,
                            user_id=str(preference["user_id"])
                            if preference.get("user_id")
                            else None,
                            stop=str(preference.get("value", "")).lower() == "stop",
                        ),
                    )
            else:
                yield Routed(route or waba_id, UnknownItem(field_name, {"value": value}))


# --- Twilio ---------------------------------------------------------------------------------

TWILIO_STATUS = {
    "queued": "queued",
    "accepted": "queued",
    "scheduled": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}


def _twilio_address(value: str) -> str:
    return value.removeprefix("whatsapp:").strip()


def twilio_sender(params: Mapping[str, str], *, inbound: bool) -> str:
    """Our channel's sender address in a Twilio webhook."""
    return params.get("To", "") if inbound else params.get("From", "")


def _twilio_fields(params: Mapping[str, str]) -> dict[str, str]:
    """Each parameter's (last) value, without NUL characters."""
    return {_without_nul(key): _without_nul(params.get(key, "")) for key in params}


def parse_twilio_inbound(params: Mapping[str, str]) -> InboundMessage:
    params = _twilio_fields(params)
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or ""
    if not sid:
        raise PayloadError("The request has no MessageSid.")
    sender = _twilio_address(params.get("From", ""))
    wa_id = params.get("WaId") or (sender.lstrip("+") if sender.lstrip("+").isdigit() else "")
    wa_id = wa_id if len(wa_id) <= WA_ID_MAX else ""
    external = _twilio_address(params.get("ExternalUserId", ""))
    user_id = external or (sender if sender and not sender.lstrip("+").isdigit() else "")
    if not wa_id and not user_id:
        raise PayloadError("The request has no sender (From, WaId or ExternalUserId).")
    try:
        num_media = int(params.get("NumMedia") or 0)
    except ValueError:
        num_media = 0
    media = None
    if num_media and params.get("MediaUrl0"):
        media = MediaRef(
            media_id="",
            url=params["MediaUrl0"],
            mime_type=params.get("MediaContentType0", ""),
            filename="",
        )
    kind = (params.get("MessageType") or "").lower()
    if not kind:
        kind = "image" if media else ("location" if params.get("Latitude") else "text")
    if media and kind == "text":
        kind = _media_type(media.mime_type)
    text = params.get("Body", "")
    if kind == "button":
        text = params.get("ButtonText") or text
    inbound = InboundMessage(
        provider_message_id=sid,
        wa_id=wa_id or None,
        user_id=user_id or None,
        profile_name=params.get("ProfileName", ""),
        username="",
        type=kind,
        text=text,
        content=params,
        timestamp=None,
        reply_to_provider_id=params.get("OriginalRepliedMessageSid") or None,
        media=media,
        error_code="",
        error_message="",
    )
    return _bounded_inbound(inbound)


def _media_type(mime_type: str) -> str:
    main = mime_type.split("/", 1)[0]
    if mime_type == "image/webp":
        return "sticker"
    return main if main in ("image", "audio", "video") else "document"


def parse_twilio_status(params: Mapping[str, str]) -> StatusUpdate:
    params = _twilio_fields(params)
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    raw_status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not raw_status:
        raise PayloadError("A status callback needs MessageSid and MessageStatus.")
    update = StatusUpdate(
        provider_message_id=sid,
        status=TWILIO_STATUS.get(raw_status, raw_status),
        timestamp=None,
        error_code=params.get("ErrorCode", ""),
        error_title=params.get("ErrorMessage", ""),
        error_details="",
        extra={"provider_status": raw_status},
        # From the status callback URL we send along, kept with the parameters.
        our_message_id=_our_message_id(params.get("message_id")),
    )
    return _bounded_status(update)
