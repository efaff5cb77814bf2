"""The rules an outbound message must pass before it is queued, for one message or a batch.

A request names a channel, a recipient and content in the API's shape. Each rule that fails
raises `SendRefused` with an HTTP status, a stable code and a message a person can act on.
A message that passes is turned into the provider-neutral content of
`whatsapp_platform.lib.providers.base` and handed to `conversations.sending.message_queue`.

A batch is checked with its contacts, templates, quoted messages and idempotency keys looked up
together, a handful of queries whatever its size; each item still passes or fails on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import transaction
from django.utils import timezone

from conversations.models import Contact, Conversation, Message
from conversations.sending import message_queue
from whatsapp_platform.lib.phone import InvalidPhoneNumber, normalize_msisdn
from whatsapp_platform.models import Channel, Organization

if TYPE_CHECKING:
    from campaigns.models import MessageTemplate

# The customer-service window: free-form messages only this long after the contact's last one.
SERVICE_WINDOW = timedelta(hours=24)
BULK_MAX_MESSAGES = 1000

PRIORITIES: dict[str, int] = {
    "high": Message.Priority.HIGH,
    "normal": Message.Priority.NORMAL,
    "low": Message.Priority.LOW,
}
PRIORITY_NAMES: dict[int, str] = {value: name for name, value in PRIORITIES.items()}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class SendRefused(Exception):
    """A message the platform will not queue, and why."""

    def __init__(
        self, message: str, *, code: str, status: int = 422, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field


@dataclass(frozen=True)
class SendRequest:
    """One message as the API takes it, its shape already validated."""

    to: str
    type: str  # text | template | media | interactive
    channel_id: int | None = None
    text: Mapping[str, Any] | None = None
    template: Mapping[str, Any] | None = None
    media: Mapping[str, Any] | None = None
    interactive: Mapping[str, Any] | None = None
    reply_to: int | None = None
    priority: str = "normal"
    idempotency_key: str | None = None


@dataclass(frozen=True)
class SendOutcome:
    message: Message
    created: bool  # False: the idempotency key named a message already queued


@dataclass
class _Lookups:
    """What a batch needs from the database, read once for all its items."""

    channels: dict[int, Channel]
    by_key: dict[str, Message]
    contacts: dict[str, Contact]
    templates: dict[tuple[int, str, str], MessageTemplate]
    quoted: dict[int, Message]

    @classmethod
    def load(cls, organization: Organization, requests: Sequence[SendRequest]) -> _Lookups:
        channels = {c.id: c for c in Channel.tenant.for_organization(organization)}
        keys = {r.idempotency_key for r in requests if r.idempotency_key}
        by_key = {
            m.idempotency_key: m
            for m in Message.tenant.for_organization(organization)
            .filter(idempotency_key__in=keys)
            .select_related("contact")
            if m.idempotency_key
        }
        wa_ids = set()
        for request in requests:
            try:
                wa_ids.add(normalize_msisdn(request.to))
            except InvalidPhoneNumber:
                continue
        contacts = {
            c.wa_id: c
            for c in Contact.tenant.for_organization(organization).filter(wa_id__in=wa_ids)
            if c.wa_id
        }
        templates: dict[tuple[int, str, str], MessageTemplate] = {}
        template_names = {str(r.template["name"]) for r in requests if r.template}
        if template_names:
            # Templates are synced by the campaigns app; named by label, not imported, so that
            # conversations depends on nothing above it.
            template_model = apps.get_model("campaigns", "MessageTemplate")
            for template in template_model.tenant.for_organization(organization).filter(
                name__in=template_names
            ):
                templates[(template.channel_id, template.name, template.language)] = template
        quoted_ids = {r.reply_to for r in requests if r.reply_to is not None}
        quoted = {
            m.id: m for m in Message.tenant.for_organization(organization).filter(id__in=quoted_ids)
        }
        return cls(channels, by_key, contacts, templates, quoted)


@dataclass
class _Planned:
    """A message that passed every rule, ready to queue."""

    channel: Channel
    wa_id: str
    contact: Contact | None
    type: str
    content: dict[str, Any]
    text: str
    priority: int
    reply_to: Message | None
    idempotency_key: str | None
    fingerprint: tuple[Any, ...] = field(default=())


# --- Entry points -------------------------------------------------------------------------


def outbound_send(*, organization: Organization, request: SendRequest) -> SendOutcome:
    """Check one message against every rule and queue it; raises SendRefused."""
    lookups = _Lookups.load(organization, [request])
    with transaction.atomic():
        planned = _plan(organization, request, lookups)
        if isinstance(planned, SendOutcome):
            return planned
        _create_contacts(organization, [planned], lookups)
        return _queue(planned)


@dataclass(frozen=True)
class BulkItemResult:
    index: int
    outcome: SendOutcome | None = None
    refused: SendRefused | None = None


def outbound_send_bulk(
    *, organization: Organization, requests: Sequence[SendRequest | None]
) -> list[BulkItemResult]:
    """Check and queue each message on its own; a `None` item (bad shape) is skipped.

    The results come in the order of the requests; `None` items get an empty result, for the
    caller to fill with its own errors.
    """
    if len(requests) > BULK_MAX_MESSAGES:
        raise SendRefused(
            f"A bulk request takes at most {BULK_MAX_MESSAGES:,} messages; got {len(requests):,}.",
            code="too_many_messages",
            status=400,
            field="messages",
        )
    valid = [r for r in requests if r is not None]
    lookups = _Lookups.load(organization, valid)
    results: list[BulkItemResult] = []
    with transaction.atomic():
        planned: dict[int, _Planned | SendOutcome] = {}
        for index, request in enumerate(requests):
            if request is None:
                continue
            try:
                planned[index] = _plan(organization, request, lookups)
            except SendRefused as refused:
                results.append(BulkItemResult(index=index, refused=refused))
        _create_contacts(
            organization, [p for p in planned.values() if isinstance(p, _Planned)], lookups
        )
        # A key used twice in one batch: the first queues, the second is its duplicate.
        queued_by_key: dict[str, tuple[_Planned, SendOutcome]] = {}
        for index, item in planned.items():
            if isinstance(item, SendOutcome):
                results.append(BulkItemResult(index=index, outcome=item))
                continue
            earlier = queued_by_key.get(item.idempotency_key or "")
            if earlier is not None:
                if earlier[0].fingerprint == item.fingerprint:
                    outcome = SendOutcome(message=earlier[1].message, created=False)
                    results.append(BulkItemResult(index=index, outcome=outcome))
                else:
                    results.append(BulkItemResult(index=index, refused=_key_conflict()))
                continue
            outcome = _queue(item)
            if item.idempotency_key:
                queued_by_key[item.idempotency_key] = (item, outcome)
            results.append(BulkItemResult(index=index, outcome=outcome))
    done = {result.index for result in results}
    results.extend(BulkItemResult(index=i) for i in range(len(requests)) if i not in done)
    results.sort(key=lambda result: result.index)
    return results


# --- Rules --------------------------------------------------------------------------------


def _plan(
    organization: Organization, request: SendRequest, lookups: _Lookups
) -> _Planned | SendOutcome:
    channel = _channel_for(request, lookups)
    try:
        wa_id = normalize_msisdn(request.to)
    except InvalidPhoneNumber as exc:
        raise SendRefused(
            f"'to' is not a valid phone number in international format: {exc}",
            code="invalid_number",
            status=400,
            field="to",
        ) from None
    if request.template is not None and not request.template.get("language"):
        language = _template_language(channel, str(request.template["name"]), lookups)
        request = replace(request, template={**request.template, "language": language})
    message_type, content, text = _content(request)
    priority = PRIORITIES[request.priority]
    fingerprint = (
        channel.id,
        wa_id,
        message_type,
        _comparable(content),
        priority,
        request.reply_to,
    )

    # The same key again: the same message, never a second send.
    if request.idempotency_key:
        existing = lookups.by_key.get(request.idempotency_key)
        if existing is not None:
            if _fingerprint_of(existing) != fingerprint:
                raise _key_conflict()
            return SendOutcome(message=existing, created=False)

    _check_channel(channel, request, content)
    contact = lookups.contacts.get(wa_id)
    if contact is not None and contact.is_opted_out:
        raise SendRefused(
            "The contact has opted out of messages from this organization.",
            code="contact_opted_out",
            field="to",
        )
    if message_type == Message.Type.TEMPLATE:
        assert request.template is not None
        template = _template_for(channel, request.template, lookups)
        _check_template_parameters(template, request.template)
        content["template"]["provider_template_id"] = template.provider_template_id
        # Marketing templates count against the contact's frequency cap when they are sent.
        content["template"]["category"] = template.category
        text = _render(template.body, content["template"]["body_parameters"])
    else:
        _check_service_window(contact)
    reply_to = None
    if request.reply_to is not None:
        reply_to = _quoted(request.reply_to, channel, contact, lookups)
        content["reply_to"] = reply_to.provider_message_id
    return _Planned(
        channel=channel,
        wa_id=wa_id,
        contact=contact,
        type=message_type,
        content=content,
        text=text,
        priority=priority,
        reply_to=reply_to,
        idempotency_key=request.idempotency_key or None,
        fingerprint=fingerprint,
    )


def _key_conflict() -> SendRefused:
    return SendRefused(
        "This idempotency key was already used for a different message. Use a new key for a "
        "new message, or repeat the original request unchanged.",
        code="idempotency_key_conflict",
        status=409,
        field="idempotency_key",
    )


def _channel_for(request: SendRequest, lookups: _Lookups) -> Channel:
    if request.channel_id is not None:
        channel = lookups.channels.get(request.channel_id)
        if channel is None:
            raise SendRefused(
                f"Channel {request.channel_id} not found.",
                code="channel_not_found",
                status=404,
                field="channel",
            )
        return channel
    active = [c for c in lookups.channels.values() if c.is_active]
    if len(active) == 1:
        return active[0]
    if not active:
        raise SendRefused(
            "The organization has no active channel to send from.",
            code="no_active_channel",
            status=409,
            field="channel",
        )
    raise SendRefused(
        f"Name the channel to send from: the organization has {len(active)} active channels.",
        code="channel_required",
        status=400,
        field="channel",
    )


def _check_channel(channel: Channel, request: SendRequest, content: dict[str, Any]) -> None:
    if not channel.is_active:
        raise SendRefused(
            f"Channel {channel.id} is inactive.",
            code="channel_inactive",
            status=409,
            field="channel",
        )
    if channel.credential_error:
        raise SendRefused(
            f"Channel {channel.id} cannot send until its credentials are fixed: the provider "
            f"rejected them ({channel.credential_error[:200]}).",
            code="channel_credential_error",
            status=409,
            field="channel",
        )
    if channel.provider == Channel.Provider.TWILIO:
        if request.type == "interactive":
            raise SendRefused(
                "Twilio channels cannot send free-form interactive messages: send a template "
                "with buttons instead.",
                code="unsupported_type",
                status=400,
                field="type",
            )
        if content.get("media", {}).get("media_id"):
            raise SendRefused(
                "Twilio channels send media by link, not by media id.",
                code="unsupported_media",
                status=400,
                field="media",
            )


def _check_service_window(contact: Contact | None) -> None:
    last_inbound = contact.last_inbound_at if contact is not None else None
    if last_inbound is None or timezone.now() - last_inbound > SERVICE_WINDOW:
        raise SendRefused(
            "Free-form messages can be sent only within 24 hours of the contact's last message; "
            "send an approved template instead.",
            code="outside_service_window",
            field="type",
        )


def _quoted(
    message_id: int, channel: Channel, contact: Contact | None, lookups: _Lookups
) -> Message:
    quoted = lookups.quoted.get(message_id)
    if quoted is None:
        raise SendRefused(
            f"Message {message_id} not found.",
            code="reply_to_not_found",
            status=404,
            field="reply_to",
        )
    if quoted.channel_id != channel.id or contact is None or quoted.contact_id != contact.id:
        raise SendRefused(
            "A reply can quote only a message of the same conversation.",
            code="reply_to_other_conversation",
            field="reply_to",
        )
    if not quoted.provider_message_id:
        raise SendRefused(
            "The quoted message has not reached the provider yet, so it cannot be quoted.",
            code="reply_to_not_sent",
            field="reply_to",
        )
    return quoted


# --- Templates ----------------------------------------------------------------------------


def _template_language(channel: Channel, name: str, lookups: _Lookups) -> str:
    """The language of the channel's only template of that name, when none was given."""
    languages = sorted(
        language
        for channel_id, template_name, language in lookups.templates
        if channel_id == channel.id and template_name == name
    )
    if len(languages) == 1:
        return languages[0]
    if not languages:
        raise SendRefused(
            f"Channel {channel.id} has no template named '{name}'.",
            code="template_not_found",
            field="template",
        )
    raise SendRefused(
        f"Template '{name}' exists in several languages ({', '.join(languages)}): "
        "name the language.",
        code="template_language_required",
        field="template",
    )


def _template_for(
    channel: Channel, request: Mapping[str, Any], lookups: _Lookups
) -> MessageTemplate:
    name, language = str(request["name"]), str(request["language"])
    template = lookups.templates.get((channel.id, name, language))
    if template is None:
        raise SendRefused(
            f"Channel {channel.id} has no template named '{name}' in language '{language}'.",
            code="template_not_found",
            field="template",
        )
    if not template.is_sendable:
        reason = f": {template.status_reason}" if template.status_reason else ""
        raise SendRefused(
            f"Template '{name}' ({language}) is {template.status} and cannot be sent{reason}.",
            code="template_not_approved",
            field="template",
        )
    return template


@dataclass(frozen=True)
class TemplateSlots:
    """What a template's components ask the sender to fill."""

    body: list[str]
    header_text: list[str]
    header_media: str | None  # image | video | document
    # Button index → the parameter sub type it needs (url, copy_code).
    buttons: dict[int, str]
    quick_replies: frozenset[int]


def _placeholders(text: str) -> list[str]:
    names: list[str] = []
    for name in _PLACEHOLDER.findall(text or ""):
        if name not in names:
            names.append(name)
    return names


def template_slots(*, body: str, components: Iterable[Any]) -> TemplateSlots:
    """Read the placeholders of the body, the header text and the buttons of a template.

    `components` is in Meta's shape (`{"type": "BODY", "text": ...}`, `HEADER` with `format`,
    `BUTTONS` with `buttons`); the body text falls back to the template's `body`.
    """
    body_text: str | None = None
    header_text: list[str] = []
    header_media = None
    buttons: dict[int, str] = {}
    quick_replies: set[int] = set()
    components_list = [c for c in components if isinstance(c, dict)] if components else []
    for component in components_list:
        kind = str(component.get("type", "")).upper()
        if kind == "BODY":
            body_text = str(component.get("text", ""))
        elif kind == "HEADER":
            header_format = str(component.get("format", "TEXT")).upper()
            if header_format == "TEXT":
                header_text = _placeholders(str(component.get("text", "")))
            elif header_format in {"IMAGE", "VIDEO", "DOCUMENT"}:
                header_media = header_format.lower()
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons") or []):
                button_type = str(button.get("type", "")).upper()
                if button_type == "URL" and _placeholders(str(button.get("url", ""))):
                    buttons[index] = "url"
                elif button_type == "COPY_CODE":
                    buttons[index] = "copy_code"
                elif button_type == "QUICK_REPLY":
                    quick_replies.add(index)
    body_names = _placeholders(body_text if body_text is not None else body)
    if any(str(c.get("type", "")).startswith("twilio/") for c in components_list):
        # Twilio Content: one set of variables for the body, media and action URLs alike,
        # all sent as the body's parameters (ContentVariables).
        for name in _placeholders(json.dumps(components_list)):
            if name not in body_names:
                body_names.append(name)
        if all(name.isdigit() for name in body_names):
            body_names.sort(key=int)
        return TemplateSlots(
            body=body_names,
            header_text=[],
            header_media=None,
            buttons={},
            quick_replies=frozenset(),
        )
    return TemplateSlots(
        body=body_names,
        header_text=header_text,
        header_media=header_media,
        buttons=buttons,
        quick_replies=frozenset(quick_replies),
    )


def _check_parameters(where: str, names: list[str], given: Any) -> None:
    """Every placeholder filled, and nothing the template does not take."""
    if not names:
        if given:
            raise SendRefused(
                f"The template's {where} has no placeholders, but parameters were given.",
                code="template_parameters",
                field="template",
            )
        return
    placeholders = ", ".join("{{" + name + "}}" for name in names)
    if all(name.isdigit() for name in names):
        if not isinstance(given, list) or len(given) != len(names):
            count = len(given) if isinstance(given, list) else 0
            raise SendRefused(
                f"The template's {where} needs {len(names)} parameters as a list "
                f"({placeholders}); got {count}.",
                code="template_parameters",
                field="template",
            )
        return
    if not isinstance(given, dict):
        raise SendRefused(
            f"The template's {where} has named placeholders ({placeholders}): give its "
            "parameters as an object of name to value.",
            code="template_parameters",
            field="template",
        )
    missing = [name for name in names if name not in given]
    unknown = sorted(set(given) - set(names))
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unknown:
            parts.append("unknown " + ", ".join(unknown))
        raise SendRefused(
            f"The template's {where} parameters do not match its placeholders "
            f"({placeholders}): {'; '.join(parts)}.",
            code="template_parameters",
            field="template",
        )


def _check_template_parameters(template: MessageTemplate, request: Mapping[str, Any]) -> None:
    slots = template_slots(body=template.body, components=template.components)
    _check_parameters("body", slots.body, request.get("parameters"))
    header = request.get("header")
    if slots.header_media:
        if not header or header.get("type") != slots.header_media:
            raise SendRefused(
                f"The template's header is a {slots.header_media}: give header.type "
                f"'{slots.header_media}' with a link or a media_id.",
                code="template_parameters",
                field="template",
            )
    elif header and header.get("type") != "text":
        raise SendRefused(
            "The template has no media header.", code="template_parameters", field="template"
        )
    else:
        _check_parameters("header", slots.header_text, (header or {}).get("parameters"))
    given = {int(button["index"]): button for button in request.get("buttons") or []}
    for index, sub_type in slots.buttons.items():
        button = given.get(index)
        if button is None or button.get("sub_type") != sub_type:
            raise SendRefused(
                f"The template's button {index} needs a '{sub_type}' parameter.",
                code="template_parameters",
                field="template",
            )
    for index, button in given.items():
        if index not in slots.buttons and not (
            index in slots.quick_replies and button.get("sub_type") == "quick_reply"
        ):
            raise SendRefused(
                f"The template's button {index} takes no parameter.",
                code="template_parameters",
                field="template",
            )


def _render(body: str, parameters: list[Any]) -> str:
    """The body as the recipient reads it, kept as the message's text."""
    positional = [p for p in parameters if not isinstance(p, dict)]
    named = {p["parameter_name"]: p["text"] for p in parameters if isinstance(p, dict)}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in named:
            return str(named[name])
        index = int(name) - 1 if name.isdigit() else -1
        return str(positional[index]) if 0 <= index < len(positional) else match.group(0)

    return _PLACEHOLDER.sub(fill, body)


# --- Content ------------------------------------------------------------------------------


def _content(request: SendRequest) -> tuple[str, dict[str, Any], str]:
    """(message type, provider-neutral content, text) of a request, before any lookup."""
    if request.type == "text":
        assert request.text is not None
        body = str(request.text["body"])
        return (
            Message.Type.TEXT,
            {"body": body, "preview_url": bool(request.text.get("preview_url", False))},
            body,
        )
    if request.type == "template":
        assert request.template is not None
        header = dict(request.template.get("header") or {})
        if "parameters" in header:
            header["parameters"] = _provider_parameters(header["parameters"])
        return (
            Message.Type.TEMPLATE,
            {
                "template": {
                    "name": request.template["name"],
                    "language": request.template["language"],
                    "provider_template_id": "",
                    "body_parameters": _provider_parameters(request.template.get("parameters")),
                    "header": header or None,
                    "buttons": [dict(b) for b in request.template.get("buttons") or []],
                }
            },
            "",
        )
    if request.type == "media":
        assert request.media is not None
        media = {
            key: request.media[key]
            for key in ("link", "media_id", "caption", "filename")
            if request.media.get(key)
        }
        return str(request.media["type"]), {"media": media}, str(media.get("caption", ""))
    assert request.interactive is not None
    interactive_body = request.interactive.get("body") or {}
    return (
        Message.Type.INTERACTIVE,
        {"interactive": dict(request.interactive)},
        str(interactive_body.get("text", "")),
    )


def _provider_parameters(parameters: list[str] | dict[str, str] | None) -> list[Any]:
    """Positional values as they are; named ones as Graph parameter objects, which every
    backend reads (Meta's `parameter_name`, Twilio's ContentVariables keys)."""
    if isinstance(parameters, dict):
        return [
            {"type": "text", "parameter_name": name, "text": value}
            for name, value in parameters.items()
        ]
    return list(parameters or [])


def _comparable(content: dict[str, Any]) -> dict[str, Any]:
    """Content as the caller asked for it: without what the platform filled in."""
    comparable = {key: value for key, value in content.items() if key != "reply_to"}
    if "template" in comparable:
        template = dict(comparable["template"])
        template.pop("provider_template_id", None)
        template.pop("category", None)
        comparable["template"] = template
    return comparable


def _fingerprint_of(message: Message) -> tuple[Any, ...]:
    return (
        message.channel_id,
        message.contact.wa_id,
        message.type,
        _comparable(message.content),
        message.priority,
        message.reply_to_id,
    )


# --- Queueing -----------------------------------------------------------------------------


def _create_contacts(
    organization: Organization, planned: list[_Planned], lookups: _Lookups
) -> None:
    """Contacts the organization does not know yet (template sends only), and conversations,
    created together."""
    missing = {p.wa_id for p in planned if p.contact is None} - set(lookups.contacts)
    if missing:
        Contact.objects.bulk_create(
            [Contact(organization=organization, wa_id=wa_id) for wa_id in sorted(missing)],
            ignore_conflicts=True,  # created meanwhile by an inbound message: use that one
        )
        for contact in Contact.tenant.for_organization(organization).filter(wa_id__in=missing):
            if contact.wa_id:
                lookups.contacts[contact.wa_id] = contact
    for item in planned:
        if item.contact is None:
            item.contact = lookups.contacts[item.wa_id]
    # Their conversations too, so that queueing each message only finds its thread.
    pairs = {(p.channel.id, p.contact.id) for p in planned if p.contact is not None}
    existing = set(
        Conversation.tenant.for_organization(organization)
        .filter(contact_id__in={contact for _, contact in pairs})
        .values_list("channel_id", "contact_id")
    )
    Conversation.objects.bulk_create(
        [
            Conversation(organization=organization, channel_id=channel, contact_id=contact)
            for channel, contact in sorted(pairs - existing)
        ],
        ignore_conflicts=True,
    )


def _queue(planned: _Planned) -> SendOutcome:
    assert planned.contact is not None
    message, created = message_queue(
        channel=planned.channel,
        contact=planned.contact,
        type=planned.type,
        content=planned.content,
        text=planned.text,
        priority=planned.priority,
        idempotency_key=planned.idempotency_key,
        reply_to=planned.reply_to,
    )
    return SendOutcome(message=message, created=created)
