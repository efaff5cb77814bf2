"""Client analytics events: accepted by the API onto the `analytics` queue, stored by a task,
and counted in each campaign's funnel (sent → delivered → read → replied, then client events).
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from whatsapp_platform.monitoring import metrics

logger = logging.getLogger(__name__)


class EventInput(TypedDict):
    event_id: str
    name: str
    campaign_id: int | None
    message_id: int | None
    properties: dict[str, Any]
    occurred_at: str  # ISO 8601


def analytics_events_enqueue(*, organization_id: int, events: list[EventInput]) -> None:
    """Put the events on the analytics queue; raises when the broker cannot take them, so the
    caller answers 503 and the client sends them again (nothing accepted is lost)."""
    from whatsapp_platform.monitoring.tasks import store_analytics_events

    store_analytics_events.apply_async(args=(organization_id, events))


def analytics_events_store(*, organization_id: int, events: list[EventInput]) -> int:
    """Store the events once each (by the client's event id); returns how many were new.

    A campaign or message that is not the organization's is dropped from the event, never
    linked: the API checked it, and this keeps a replayed or forged message harmless.
    """
    from campaigns.models import Campaign
    from conversations.models import Message
    from conversations.selectors import message_ids_locked_for_link
    from whatsapp_platform.monitoring.models import AnalyticsEvent

    campaign_ids = {e["campaign_id"] for e in events if e.get("campaign_id")}
    message_ids = {e["message_id"] for e in events if e.get("message_id")}
    own_campaigns = set(
        Campaign.tenant.for_organizations([organization_id])
        .filter(id__in=campaign_ids)
        .values_list("id", flat=True)
    )
    own_messages = set(
        Message.tenant.for_organizations([organization_id])
        .filter(id__in=message_ids)
        .values_list("id", flat=True)
    )
    rows = []
    for event in events:
        occurred_at = parse_datetime(event.get("occurred_at") or "") or timezone.now()
        rows.append(
            AnalyticsEvent(
                organization_id=organization_id,
                event_id=event["event_id"],
                name=event["name"],
                campaign_id=event.get("campaign_id")
                if event.get("campaign_id") in own_campaigns
                else None,
                message_id=event.get("message_id"),
                properties=event.get("properties") or {},
                occurred_at=occurred_at,
            )
        )
    existing = set(
        AnalyticsEvent.objects.filter(
            organization_id=organization_id, event_id__in=[r.event_id for r in rows]
        ).values_list("event_id", flat=True)
    )
    with transaction.atomic():
        # Held while linked, so that an event never points at a message archived meanwhile.
        own_messages &= message_ids_locked_for_link(ids=own_messages)
        for row in rows:
            if row.message_id not in own_messages:
                row.message_id = None
        AnalyticsEvent.objects.bulk_create(rows, ignore_conflicts=True)
    stored = len({r.event_id for r in rows} - existing)
    metrics.analytics_events.inc(stored)
    logger.info("Stored %s analytics event(s) of organization %s", stored, organization_id)
    return stored


class Funnel(TypedDict):
    campaign: int
    recipients: int
    sent: int
    delivered: int
    read: int
    replied: int
    events: dict[str, int]


def campaign_funnel(*, campaign: Any) -> Funnel:
    from campaigns.stats import campaign_stats
    from whatsapp_platform.monitoring.models import AnalyticsEvent

    stats = campaign_stats(campaign=campaign)
    events = dict(
        AnalyticsEvent.objects.filter(campaign_id=campaign.pk)
        .values_list("name")
        .annotate(count=Count("id"))
        .order_by("name")
        .values_list("name", "count")
    )
    return Funnel(
        campaign=campaign.pk,
        recipients=stats["recipients"],
        sent=stats["sent"],
        delivered=stats["delivered"],
        read=stats["read"],
        replied=stats["replied"],
        events=events,
    )
