from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task
def evaluate_alerts() -> None:
    """Beat, every minute: sample queue depths and log the active alerts."""
    from whatsapp_platform.monitoring.services import alerts_check_and_log

    alerts_check_and_log()


@shared_task
def store_analytics_events(organization_id: int, events: list[dict[str, Any]]) -> None:
    """Store client events; safe to run twice (one row per client event id)."""
    from whatsapp_platform.monitoring.analytics import analytics_events_store

    analytics_events_store(organization_id=organization_id, events=events)  # type: ignore[arg-type]
