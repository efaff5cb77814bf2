"""Reads for the dashboard: per-minute series over the last hour, from the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncMinute
from django.utils import timezone


def _per_minute(queryset: QuerySet[Any], field: str, start: datetime) -> dict[str, int]:
    rows = (
        queryset.filter(**{f"{field}__gte": start})
        .annotate(minute=TruncMinute(field))
        .values("minute")
        .annotate(count=Count("id"))
        .values_list("minute", "count")
    )
    return {minute.strftime("%H:%M"): count for minute, count in rows}


def dashboard_data(*, minutes: int = 60) -> dict[str, Any]:
    from conversations.models import Message
    from webhooks.models import WebhookEvent
    from whatsapp_platform.monitoring.models import QueueSample
    from whatsapp_platform.monitoring.queues import QueuesUnavailable, queue_depths
    from whatsapp_platform.monitoring.services import alerts_evaluate, campaign_progress

    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    labels = [(start + timedelta(minutes=i)).strftime("%H:%M") for i in range(minutes)]

    webhooks = _per_minute(WebhookEvent.objects.all(), "received_at", start)
    outbound = Message.objects.filter(direction=Message.Direction.OUTBOUND)
    sends = {
        status: _per_minute(outbound, f"{status}_at", start)
        for status in ("sent", "delivered", "read", "failed")
    }
    history: dict[str, dict[str, int]] = {}
    for sample in QueueSample.objects.filter(sampled_at__gte=start).order_by("sampled_at"):
        history.setdefault(sample.queue, {})[sample.sampled_at.strftime("%H:%M")] = (
            sample.visible + sample.in_flight + sample.delayed
        )
    try:
        depths = queue_depths()
        current: dict[str, Any] = {d.queue: d.as_dict() for d in depths}
    except QueuesUnavailable as exc:
        depths, current = None, {}
        error: str | None = str(exc)
    else:
        error = None
    # The current reading is the last point of each queue's line.
    for queue, depth in current.items():
        history.setdefault(queue, {})[labels[-1]] = (
            depth["visible"] + depth["in_flight"] + depth["delayed"]
        )
    return {
        "generated_at": timezone.now().isoformat(),
        "minutes": labels,
        "webhooks": [webhooks.get(m, 0) for m in labels],
        "sends": {status: [series.get(m, 0) for m in labels] for status, series in sends.items()},
        "queues": {q: [series.get(m) for m in labels] for q, series in sorted(history.items())},
        "queues_now": current,
        "queues_error": error,
        "campaigns": campaign_progress(),
        "alerts": [a.as_dict() for a in alerts_evaluate(depths if depths is not None else [])],
    }
