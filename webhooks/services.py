"""Webhook use cases: record a verified delivery, process it once, replay it, sweep."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import QueryDict
from django.utils import timezone

from campaigns.services import template_status_apply
from conversations.services import (
    contact_set_opt_out,
    contact_upsert,
    message_receive,
    message_status_apply,
)
from conversations.types import InboundMessage, StatusUpdate
from webhooks import parsing
from webhooks.models import WebhookEvent
from webhooks.signature import meta_signature_valid
from whatsapp_platform.models import Channel

logger = logging.getLogger(__name__)

State = WebhookEvent.State


def dedupe_key(provider: str, body: bytes) -> str:
    """Redeliveries repeat the body byte for byte; items are also deduplicated by their ids."""
    return hashlib.sha256(provider.encode() + b":" + body).hexdigest()


def _enqueue(event_id: int) -> bool:
    from webhooks.tasks import process_webhook_event

    try:
        process_webhook_event.apply_async(args=(event_id,))
    except Exception:
        logger.warning("Broker unavailable: webhook event %s waits for the sweeper", event_id)
        return False
    return True


def _enqueue_after_commit(event_id: int) -> None:
    def send() -> None:
        if not _enqueue(event_id):
            WebhookEvent.objects.filter(id=event_id, state=State.QUEUED).update(
                state=State.RECEIVED, queued_at=None
            )

    transaction.on_commit(send)


def webhook_event_record(
    *,
    provider: str,
    body: bytes,
    kind: str,
    channel: Channel | None = None,
    organization_id: int | None = None,
    signature: str = "",
) -> WebhookEvent | None:
    """Store a verified delivery and enqueue its processing after commit.

    Returns None for a redelivery of a stored body: it is answered 200 and not processed again.
    """
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                provider=provider,
                organization_id=channel.organization_id if channel else organization_id,
                channel=channel,
                body=body.decode("utf-8"),
                kind=kind,
                dedupe_key=dedupe_key(provider, body),
                signature=signature,
                state=State.QUEUED,
                queued_at=timezone.now(),
            )
            _enqueue_after_commit(event.id)
    except IntegrityError:
        return None
    return event


# --- Processing -----------------------------------------------------------------------------


class EventItemsFailed(Exception):
    """Some items of an event failed; the others were applied. Retried with back-off."""


@dataclass
class _Outcome:
    applied: int = 0
    ignored: int = 0
    unroutable: int = 0
    errors: list[str] = field(default_factory=list)


def _apply(channel: Channel, item: Any) -> bool:
    """Apply one item for its channel. False when the platform has nothing to do with it."""
    if isinstance(item, InboundMessage):
        message_receive(channel=channel, inbound=item)
    elif isinstance(item, StatusUpdate):
        message_status_apply(
            organization=channel.organization, provider=channel.provider, update=item
        )
    elif isinstance(item, parsing.TemplateStatusUpdate):
        template_status_apply(
            waba_id=item.waba_id,
            name=item.name,
            language=item.language,
            status=item.status,
            reason=item.reason,
        )
    elif isinstance(item, parsing.PreferenceUpdate):
        contact = contact_upsert(
            organization=channel.organization, wa_id=item.wa_id, user_id=item.user_id
        )
        contact_set_opt_out(contact_id=contact.id, opted_out=item.stop)
    else:
        return False
    return True


def _apply_each(items: list[tuple[Channel | None, Any]], outcome: _Outcome) -> None:
    """Each item on its own: one bad item fails alone, the others are applied."""
    for index, (channel, item) in enumerate(items):
        if channel is None:
            outcome.unroutable += 1
            continue
        try:
            with transaction.atomic():
                applied = _apply(channel, item)
        except Exception as exc:
            # The type only: exception texts can hold phone numbers, which never go to logs.
            logger.error("Webhook item %s failed: %s", index, type(exc).__name__)
            outcome.errors.append(f"item {index}: {type(exc).__name__}: {exc}"[:500])
            continue
        if applied:
            outcome.applied += 1
        else:
            outcome.ignored += 1


def _meta_items(event: WebhookEvent) -> list[tuple[Channel | None, Any]]:
    payload = parsing.parse_meta_body(event.body.encode("utf-8"))
    phone_number_ids, waba_ids = parsing.meta_routes(payload)
    channels = list(
        Channel.objects.select_related("organization").filter(
            Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids),
            provider=Channel.Provider.META,
        )
    )
    body = event.body.encode("utf-8")
    # An item is applied only for a channel whose own app secret signed the body: a tenant's
    # secret never vouches for another tenant's number.
    trusted = [c for c in channels if meta_signature_valid(body, event.signature, c.app_secret)]
    by_phone = {c.phone_number_id: c for c in trusted}
    by_waba = {c.waba_id: c for c in trusted if c.waba_id}
    items: list[tuple[Channel | None, Any]] = []
    for routed in parsing.iter_meta_items(payload):
        channel = by_phone.get(routed.route) or (
            by_waba.get(routed.route)
            if isinstance(routed.item, parsing.TemplateStatusUpdate)
            else None
        )
        if channel is None and isinstance(routed.item, parsing.UnknownItem):
            channel = next(iter(trusted), None)  # nothing to route: stored and ignored
        items.append((channel, routed.item))
    return items


def _twilio_items(event: WebhookEvent) -> list[tuple[Channel | None, Any]]:
    params = QueryDict(event.body)
    if event.kind == WebhookEvent.Kind.STATUSES:
        item: Any = parsing.parse_twilio_status(params)
    else:
        item = parsing.parse_twilio_inbound(params)
    channel = (
        Channel.objects.select_related("organization").filter(id=event.channel_id).first()
        if event.channel_id
        else None
    )
    return [(channel, item)]


def webhook_event_process(*, event_id: int) -> WebhookEvent | None:
    """Apply every item of an event, in one transaction with its state: exactly once in effect.

    Raises EventItemsFailed after committing when some items failed, so the task retries.
    """
    with transaction.atomic():
        event = (
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(id=event_id)
            .exclude(state__in=(State.PROCESSED, State.IGNORED))
            .first()
        )
        if event is None:
            return None  # done already, or another worker has it
        outcome = _Outcome()
        try:
            items = _meta_items(event) if event.provider == "meta" else _twilio_items(event)
        except parsing.PayloadError as exc:
            items = []
            outcome.errors.append(str(exc))
        _apply_each(items, outcome)
        event.attempts += 1
        event.last_error = "\n".join(outcome.errors)
        if outcome.errors:
            event.state = State.FAILED
        elif outcome.unroutable:
            event.state = State.UNROUTABLE
            event.last_error = f"{outcome.unroutable} item(s) name a number with no channel."
        elif outcome.applied:
            event.state = State.PROCESSED
        else:
            event.state = State.IGNORED
        event.processed_at = timezone.now()
        event.save(update_fields=["attempts", "last_error", "state", "processed_at", "updated_at"])
    if outcome.errors:
        raise EventItemsFailed(f"Webhook event {event.id}: {len(outcome.errors)} item(s) failed")
    return event


def webhook_events_replay(*, event_ids: list[int]) -> int:
    """Process failed or unroutable events again (for example once their channel exists)."""
    replayable = (State.FAILED, State.UNROUTABLE, State.RECEIVED)
    count = 0
    for event_id in WebhookEvent.objects.filter(id__in=event_ids, state__in=replayable).values_list(
        "id", flat=True
    ):
        with transaction.atomic():
            updated = WebhookEvent.objects.filter(id=event_id, state__in=replayable).update(
                state=State.QUEUED, queued_at=timezone.now()
            )
            if updated:
                _enqueue_after_commit(event_id)
                count += 1
    return count


def webhook_events_requeue_stale(*, received_before_seconds: int = 30, limit: int = 1000) -> int:
    """Enqueue events the broker never took: `received` ones, and `queued` ones long unprocessed.

    Stops at the first failure: the broker is still down, and the next sweep tries again.
    """
    now = timezone.now()
    stale = (
        WebhookEvent.objects.filter(
            Q(
                state=State.RECEIVED,
                received_at__lt=now - timedelta(seconds=received_before_seconds),
            )
            | Q(
                state=State.QUEUED,
                queued_at__lt=now - timedelta(seconds=settings.WEBHOOK_REQUEUE_AFTER_SECONDS),
            )
        )
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    count = 0
    for event_id in stale:
        if not _enqueue(event_id):
            break
        WebhookEvent.objects.filter(id=event_id, state__in=(State.RECEIVED, State.QUEUED)).update(
            state=State.QUEUED, queued_at=timezone.now()
        )
        count += 1
    if count:
        logger.info("Re-enqueued %s stale webhook event(s)", count)
    return count
