from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from whatsapp_platform.lib.sqs import ensure_queues


class Command(BaseCommand):
    help = (
        "Create every SQS queue with its own dead-letter queue and redrive policy "
        "(SQS_MAX_RECEIVE_COUNT receives, dead letters kept 14 days). Safe to run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.CELERY_BROKER_URL.startswith("sqs"):
            raise CommandError(
                "CELERY_BROKER_URL is not sqs://: there are no SQS queues to set up."
            )
        for queue in ensure_queues():
            verb = "created" if queue.created else "updated"
            self.stdout.write(f"{queue.name}: {verb} (dead letters: {queue.dead_letter_url})")
