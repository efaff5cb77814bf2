"""Webhook use cases: record a verified delivery, process it once, replay it, sweep."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import Min, Q
from django.http import QueryDict
from django.utils import timezone

from campaigns.services import template_status_apply
from conversations.services import (
    contact_set_opt_out,
    contact_upsert,
    message_receive,
    message_statuses_apply,
)
from conversations.types import InboundMessage, StatusUpdate
from webhooks import parsing
from webhooks.dispatch import DISPATCH_BATCH, dispatcher
from webhooks.models import WebhookEvent
from webhooks.signature import meta_signature_valid
from webhooks.writer import EventRow, event_writer
from whatsapp_platform.models import Channel
from whatsapp_platform.monitoring import metrics

logger = logging.getLogger(__name__)

State = WebhookEvent.State


def dedupe_key(provider: str, body: bytes) -> str:
    """Redeliveries repeat the body byte for byte; items are also deduplicated by their ids."""
    return hashlib.sha256(provider.encode() + b":" + body).hexdigest()


def webhook_events_send(*, event_ids: list[int]) -> bool:
    """Put events on the `incoming` queue, as one task.

    When the broker cannot take them they are marked `received` for the sweeper, and False is
    returned.
    """
    from webhooks.tasks import process_webhook_events

    try:
        process_webhook_events.apply_async(args=(event_ids,))
    except Exception:
        logger.warning(
            "Broker unavailable: %s webhook event(s) wait for the sweeper", len(event_ids)
        )
        WebhookEvent.objects.filter(id__in=event_ids, state=State.QUEUED).update(
            state=State.RECEIVED
        )
        return False
    return True


def webhook_event_record(
    *,
    provider: str,
    body: bytes,
    kind: str,
    channel: Channel | None = None,
    organization_id: int | None = None,
    signature: str = "",
) -> int | None:
    """Store a verified delivery and hand it to the dispatcher once committed.

    Returns the event's id, or None for a redelivery of a stored body, which is answered 200
    and not processed again. On PostgreSQL the process's writer commits it together with the
    other deliveries arriving at the same time; inside a caller's transaction, and on SQLite,
    it is stored through that connection.
    """
    row = EventRow(
        provider=provider,
        organization_id=channel.organization_id if channel else organization_id,
        channel_id=channel.id if channel else None,
        body=body.decode("utf-8"),
        kind=kind,
        dedupe_key=dedupe_key(provider, body),
        signature=signature,
    )
    if event_writer.usable():
        return event_writer.write(row)
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                provider=row.provider,
                organization_id=row.organization_id,
                channel_id=row.channel_id,
                body=row.body,
                kind=row.kind,
                dedupe_key=row.dedupe_key,
                signature=row.signature,
                # Optimistic: the dispatcher marks it `received` again if the broker refuses
                # it, and a process that dies before sending leaves it to the sweep of old
                # `queued` events.
                state=State.QUEUED,
                queued_at=timezone.now(),
            )
            transaction.on_commit(partial(dispatcher.submit, event.id))
    except IntegrityError:
        return None
    return event.id


# --- Processing -----------------------------------------------------------------------------


@dataclass
class _Outcome:
    applied: int = 0
    ignored: int = 0
    unroutable: int = 0
    errors: list[str] = field(default_factory=list)
    # An item failed for the database's sake (a deadlock), not its own: worth trying again.
    transient: bool = False


def _apply(channel: Channel, item: Any) -> bool:
    """Apply one item for its channel. False when the platform has nothing to do with it."""
    if isinstance(item, InboundMessage):
        message_receive(channel=channel, inbound=item)
    elif isinstance(item, StatusUpdate):
        message_statuses_apply(
            organization=channel.organization, provider=channel.provider, updates=[item]
        )
    elif isinstance(item, parsing.TemplateStatusUpdate):
        template_status_apply(
            organization_id=channel.organization_id,
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


def _apply_one(index: int, channel: Channel, item: Any, outcome: _Outcome) -> None:
    try:
        with transaction.atomic():
            applied = _apply(channel, item)
    except Exception as exc:
        # The type only: exception texts can hold phone numbers, which never go to logs.
        logger.error("Webhook item %s failed: %s", index, type(exc).__name__)
        outcome.errors.append(f"item {index}: {type(exc).__name__}: {exc}"[:500])
        outcome.transient = outcome.transient or isinstance(exc, OperationalError)
        return
    if applied:
        outcome.applied += 1
    else:
        outcome.ignored += 1


def _apply_each(items: list[tuple[Channel | None, Any]], outcome: _Outcome) -> None:
    """Each item on its own: one bad item fails alone, the others are applied.

    A run of statuses for one channel (Meta batches up to 1,000) is applied together, and item
    by item only if that fails.
    """
    index = 0
    while index < len(items):
        channel, item = items[index]
        if channel is None:
            outcome.unroutable += 1
            index += 1
            continue
        end = index
        while (
            end < len(items)
            and items[end][0] is channel
            and isinstance(items[end][1], StatusUpdate)
        ):
            end += 1
        if end - index > 1:
            try:
                with transaction.atomic():
                    message_statuses_apply(
                        organization=channel.organization,
                        provider=channel.provider,
                        updates=[update for _, update in items[index:end]],
                    )
            except Exception:
                for position in range(index, end):
                    _apply_one(position, channel, items[position][1], outcome)
            else:
                outcome.applied += end - index
            index = end
            continue
        _apply_one(index, channel, item, outcome)
        index += 1


ChannelCache = dict[object, list[Channel]]


def _meta_items(
    event: WebhookEvent, channel_cache: ChannelCache
) -> list[tuple[Channel | None, Any]]:
    payload = parsing.parse_meta_body(event.body.encode("utf-8"))
    phone_number_ids, waba_ids = parsing.meta_routes(payload)
    key = (frozenset(phone_number_ids), frozenset(waba_ids))
    if key not in channel_cache:
        channel_cache[key] = list(
            Channel.objects.select_related("organization").filter(
                Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids),
                provider=Channel.Provider.META,
            )
        )
    channels = channel_cache[key]
    body = event.body.encode("utf-8")
    # An item is applied only for a channel whose own app secret signed the body: a tenant's
    # secret never vouches for another tenant's number.
    trusted = [c for c in channels if meta_signature_valid(body, event.signature, c.app_secret)]
    by_phone = {c.phone_number_id: c for c in trusted}
    # A template status names only its WABA. It goes to each organization with a channel on
    # that WABA whose secret signed the body, once, and each applies it to its own templates.
    by_waba: dict[str, dict[int, Channel]] = {}
    for signer in sorted(trusted, key=lambda channel: channel.id):
        if signer.waba_id:
            by_waba.setdefault(signer.waba_id, {}).setdefault(signer.organization_id, signer)
    items: list[tuple[Channel | None, Any]] = []
    for routed in parsing.iter_meta_items(payload):
        if isinstance(routed.item, parsing.TemplateStatusUpdate):
            owners: list[Channel | None] = [*by_waba.get(routed.route, {}).values()] or [None]
            items.extend((owner, routed.item) for owner in owners)
            continue
        channel = by_phone.get(routed.route)
        if channel is None and isinstance(routed.item, parsing.UnknownItem):
            channel = next(iter(trusted), None)  # nothing to route: stored and ignored
        items.append((channel, routed.item))
    return items


def _twilio_items(event: WebhookEvent) -> list[tuple[Channel | None, Any]]:
    params = QueryDict(event.body)
    if event.kind == WebhookEvent.Kind.STATUSES:
        update = parsing.parse_twilio_status(params)
        item: Any = (
            update
            if update.status in parsing.TRACKED_STATUSES
            else parsing.UnknownItem("statuses", {"status": update.status})
        )
    else:
        item = parsing.parse_twilio_inbound(params)
    channel = (
        Channel.objects.select_related("organization").filter(id=event.channel_id).first()
        if event.channel_id
        else None
    )
    return [(channel, item)]


def webhook_event_process(
    *,
    event_id: int,
    channel_cache: ChannelCache | None = None,
    transient: list[int] | None = None,
) -> WebhookEvent | None:
    """Apply every item of an event, in one transaction with its state: exactly once in effect.

    Items that fail leave the event `failed` with their errors; the others are applied. The
    id of an event that failed for the database's sake (a deadlock) is added to `transient`.
    """
    with transaction.atomic():
        event = (
            WebhookEvent.objects.select_for_update()
            .filter(id=event_id)
            .exclude(state__in=(State.PROCESSED, State.IGNORED))
            .first()
        )
        if event is None:
            return None  # done already (a concurrent delivery waited for the lock above)
        outcome = _Outcome()
        try:
            if event.provider == WebhookEvent.Provider.META:
                items = _meta_items(event, {} if channel_cache is None else channel_cache)
            else:
                items = _twilio_items(event)
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
        if outcome.transient and transient is not None:
            transient.append(event.id)
    metrics.webhook_processed(event.provider, event.received_at, event.processed_at)
    return event


def webhook_events_process(*, event_ids: list[int]) -> list[int]:
    """Process a batch of events; returns the ids of those that failed, to retry.

    One commit for the whole batch, each event in its own savepoint: a crash mid-batch rolls
    it all back, and the redelivered task does it again. An event that lost a deadlock in the
    batch (two batches locking the same contacts and messages in different orders) is tried
    once more on its own after the commit, when it holds no locks.
    """
    failed = []
    transient: list[int] = []
    channel_cache: ChannelCache = {}
    with transaction.atomic():
        for event_id in event_ids:
            event = webhook_event_process(
                event_id=event_id, channel_cache=channel_cache, transient=transient
            )
            if event is not None and event.state == State.FAILED:
                failed.append(event_id)
    for event_id in transient:
        event = webhook_event_process(event_id=event_id, channel_cache=channel_cache)
        if event is None or event.state != State.FAILED:
            failed.remove(event_id)
    return failed


def _send_in_batches(event_ids: list[int]) -> int:
    """Mark events queued and send them; stops at the first batch the broker refuses."""
    sent = 0
    for start in range(0, len(event_ids), DISPATCH_BATCH):
        batch = event_ids[start : start + DISPATCH_BATCH]
        WebhookEvent.objects.filter(id__in=batch).exclude(
            state__in=(State.PROCESSED, State.IGNORED)
        ).update(state=State.QUEUED, queued_at=timezone.now())
        if not webhook_events_send(event_ids=batch):
            break
        sent += len(batch)
    return sent


def webhook_events_replay(*, event_ids: list[int]) -> int:
    """Process failed, unroutable or stuck events again (for example once their channel exists)."""
    replayable = (State.FAILED, State.UNROUTABLE, State.RECEIVED, State.QUEUED)
    ids = list(
        WebhookEvent.objects.filter(id__in=event_ids, state__in=replayable).values_list(
            "id", flat=True
        )
    )
    _send_in_batches(ids)
    return len(ids)


def webhook_events_requeue_stale(*, received_before_seconds: int = 30, limit: int = 1000) -> int:
    """Send events the broker never took: `received` ones, and `queued` ones long unprocessed.

    Stops at the first failure: the broker is still down, and the next sweep tries again.
    """
    now = timezone.now()
    stale = list(
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
    sent = _send_in_batches(stale)
    if sent:
        logger.info("Re-enqueued %s stale webhook event(s)", sent)
    return sent


def webhook_events_unprocessed_since() -> datetime | None:
    """When the oldest stored event still waiting to be processed was received; None when
    every one is processed. Statuses received before then have all been applied.

    Failed events are left out: they are retried or dead-lettered, and one dead-lettered
    event must not hold this back for good.
    """
    oldest = [
        # One query per state, each on its partial index.
        WebhookEvent.objects.filter(state=state).aggregate(oldest=Min("received_at"))["oldest"]
        for state in (State.RECEIVED, State.QUEUED)
    ]
    return min((at for at in oldest if at is not None), default=None)
