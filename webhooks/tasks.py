from __future__ import annotations

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings


class EventsFailed(Exception):
    """Some events of a batch failed; their applied items stay applied."""


@shared_task(bind=True, max_retries=settings.WEBHOOK_PROCESS_MAX_RETRIES)
def process_webhook_events(self: Task, event_ids: list[int]) -> None:  # type: ignore[type-arg]
    """Process a batch of stored events; only the failed ones are retried, with back-off."""
    from webhooks.services import webhook_events_process

    failed = webhook_events_process(event_ids=event_ids)
    if failed:
        countdown = get_exponential_backoff_interval(
            factor=settings.WEBHOOK_PROCESS_RETRY_BACKOFF,
            retries=self.request.retries,
            maximum=min(300, settings.TASK_MAX_COUNTDOWN),
            full_jitter=True,
        )
        raise self.retry(
            args=(failed,),
            countdown=countdown,
            exc=EventsFailed(f"{len(failed)} webhook event(s) failed: {failed[:20]}"),
        )


@shared_task
def requeue_stale_events() -> None:
    from webhooks.services import webhook_events_requeue_stale

    webhook_events_requeue_stale()


@shared_task
def resend_unreported_sends() -> None:
    """Send again, once, the `unknown` sends that no status webhook named within
    SEND_UNKNOWN_RESEND_AFTER_SECONDS, counting only the time up to which every stored webhook
    is processed: a status still waiting in the queue may name them."""
    from conversations.sending import messages_resend_unreported
    from webhooks.services import webhook_events_unprocessed_since

    messages_resend_unreported(reported_until=webhook_events_unprocessed_since())
