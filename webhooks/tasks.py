from __future__ import annotations

from celery import shared_task
from django.conf import settings

from webhooks.services import EventItemsFailed


@shared_task(
    autoretry_for=(EventItemsFailed,),
    retry_backoff=settings.WEBHOOK_PROCESS_RETRY_BACKOFF,
    retry_backoff_max=300,
    max_retries=settings.WEBHOOK_PROCESS_MAX_RETRIES,
)
def process_webhook_event(event_id: int) -> None:
    from webhooks.services import webhook_event_process

    webhook_event_process(event_id=event_id)


@shared_task
def requeue_stale_events() -> None:
    from webhooks.services import webhook_events_requeue_stale

    webhook_events_requeue_stale()
