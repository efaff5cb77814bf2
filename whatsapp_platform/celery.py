"""The Celery app and the base class of every platform task.

Delivery is at least once (late acknowledgement, requeue on worker loss), so every task is
idempotent through the database. A task that fails for good, after its own retries, is
dead-lettered: its message is copied to the dead-letter queue of the queue it came from, with the
error, and acknowledged. Should the copy fail too, the message stays unacknowledged and the
queue's redrive policy moves it to the same dead-letter queue after SQS_MAX_RECEIVE_COUNT
deliveries: a failing task is never lost and never retried forever.
"""

from __future__ import annotations

import logging
import os
import traceback
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry
from django.utils import timezone

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")

logger = logging.getLogger(__name__)

# Exceptions Celery uses for control flow, not failures.
_CONTROL_FLOW = (Retry, Ignore, Reject)


def dead_letter_queue_name(queue: str) -> str:
    from django.conf import settings

    return f"{queue}{settings.DEAD_LETTER_SUFFIX}"


class PlatformTask(Task):  # type: ignore[type-arg]
    def apply_async(  # type: ignore[override]
        self, args: Any = None, kwargs: Any = None, **options: Any
    ) -> Any:
        # A worker holds a delayed task unacknowledged while SQS's visibility clock runs: past
        # the timeout SQS hands it to a second worker. Delays are capped well below it.
        from django.conf import settings

        limit = settings.TASK_MAX_COUNTDOWN
        if options.get("countdown") is not None and options["countdown"] > limit:
            options["countdown"] = limit
        if options.get("eta") is not None:
            latest = timezone.now() + timedelta(seconds=limit)
            options["eta"] = min(options["eta"], latest)
        return super().apply_async(args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except _CONTROL_FLOW:
            raise
        except Exception as exc:
            if self.request.called_directly or self.request.is_eager:
                raise
            self._record_failure(exc)
            self._dead_letter(exc)  # raises when the copy fails: SQS redrive takes over
            return None

    def _record_failure(self, exc: Exception) -> None:
        from whatsapp_platform.monitoring.services import task_failure_record

        delivery_info = self.request.delivery_info or {}
        task_failure_record(
            task=self.name,
            task_id=self.request.id or "",
            queue=delivery_info.get("routing_key") or "",
            kind="failed",
            error=type(exc).__name__,
        )

    def _dead_letter(self, exc: Exception) -> None:
        delivery_info = self.request.delivery_info or {}
        source = delivery_info.get("routing_key") or self.app.conf.task_default_queue
        queue = dead_letter_queue_name(source)
        try:
            self.apply_async(
                args=tuple(self.request.args or ()),
                kwargs=dict(self.request.kwargs or {}),
                task_id=self.request.id,
                queue=queue,
                headers={
                    "dead_letter": {  # type: ignore[dict-item]
                        "source_queue": source,
                        "error": f"{type(exc).__name__}: {exc}"[:1000],
                        "traceback": "".join(traceback.format_exception(exc))[-4000:],
                        "retries": self.request.retries,
                        "failed_at": timezone.now().isoformat(),
                    }
                },
            )
        except Exception:
            logger.exception("Could not dead-letter task %s[%s]", self.name, self.request.id)
            raise exc from None
        logger.error(
            "Task %s[%s] failed and was dead-lettered to %s: %s",
            self.name,
            self.request.id,
            queue,
            type(exc).__name__,
        )


app = Celery("whatsapp_platform", task_cls=PlatformTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def enqueue_on_commit(task: Task, *args: Any) -> None:  # type: ignore[type-arg]
    """Send `task(*args)` once the current transaction commits, never failing the caller.

    When the broker cannot take it, the failure is logged and the caller's sweeper, which looks
    for work left behind in the database, sends it later.
    """
    from django.db import transaction

    def send() -> None:
        try:
            task.apply_async(args=args)
        except Exception:
            logger.warning("Could not enqueue %s%r: the broker is unavailable", task.name, args)

    transaction.on_commit(send)
