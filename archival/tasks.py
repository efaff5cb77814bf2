"""Archival tasks on the `archival` queue: thin, by run id, safe to run again.

A run works in bounded batches for ARCHIVE_TASK_BUDGET_SECONDS, keeping its SQS message
invisible meanwhile, then hands the rest to a fresh task of the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task
from django.conf import settings


def visibility_heartbeat(task: Task) -> Callable[[], None] | None:  # type: ignore[type-arg]
    """Extends the SQS visibility of the message being worked on, at most every third of it."""
    from whatsapp_platform.lib.sqs import queue_name, sqs_client

    handle = (task.request.properties or {}).get("delivery_tag")
    routing_key = (task.request.delivery_info or {}).get("routing_key")
    if not settings.CELERY_BROKER_URL.startswith("sqs") or not handle or not routing_key:
        return None
    client = sqs_client()
    url = client.get_queue_url(QueueName=queue_name(routing_key))["QueueUrl"]
    last = time.monotonic()

    def heartbeat() -> None:
        nonlocal last
        if time.monotonic() - last < settings.SQS_VISIBILITY_TIMEOUT / 3:
            return
        client.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=settings.SQS_VISIBILITY_TIMEOUT
        )
        last = time.monotonic()

    return heartbeat


@shared_task(bind=True)
def archive_messages(self: Any, run_id: int) -> None:
    from archival.services import archive_messages_run

    done = archive_messages_run(
        run_id=run_id,
        budget_seconds=settings.ARCHIVE_TASK_BUDGET_SECONDS,
        heartbeat=visibility_heartbeat(self),
    )
    if not done:
        archive_messages.apply_async(args=(run_id,))


@shared_task(bind=True)
def archive_media(self: Any, run_id: int) -> None:
    from archival.media import media_archive_run

    done = media_archive_run(
        run_id=run_id,
        budget_seconds=settings.ARCHIVE_TASK_BUDGET_SECONDS,
        heartbeat=visibility_heartbeat(self),
    )
    if not done:
        archive_media.apply_async(args=(run_id,))


@shared_task
def run_scheduled_archive(job_type: str) -> None:
    """Beat's daily entry: starts (or resumes) the job on archive days only."""
    from archival.schedule import is_archive_day
    from archival.services import archive_run_resume_or_trigger

    if is_archive_day(datetime.now(UTC).date()):
        archive_run_resume_or_trigger(job_type=job_type)
