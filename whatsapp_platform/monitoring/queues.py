"""Queue depths read from SQS, and the age of each queue's oldest waiting work.

SQS answers depths (GetQueueAttributes: visible, in flight, delayed) but not the age of the
oldest message: `ApproximateAgeOfOldestMessage` exists only as a CloudWatch metric. The work of
the busy queues is in the database, so their age comes from there: the oldest `queued` webhook
event (incoming) and the oldest queued send that is due (outgoing). A dead-letter queue has no
redrive policy, so peeking at it (receiving with no visibility timeout) changes nothing: its age
is that of the oldest message peeked. Work queues are never peeked, since every receive counts
towards their redrive's maxReceiveCount.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from django.conf import settings
from django.db.models import Min
from django.utils import timezone

from whatsapp_platform.lib.sqs import queue_name

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class QueuesUnavailable(Exception):
    """SQS could not be asked."""


def monitoring_sqs_client() -> SQSClient:
    """An SQS client that gives up within seconds: health checks must answer quickly."""
    return boto3.client(
        "sqs",
        region_name=settings.AWS_REGION,
        endpoint_url=settings.SQS_ENDPOINT_URL,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    visible: int
    in_flight: int
    delayed: int
    dead_letters: int
    oldest_age_seconds: float | None  # None: nothing waiting, or not known for this queue
    dead_letter_oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _queue_url(client: SQSClient, name: str) -> str:
    return client.get_queue_url(QueueName=queue_name(name))["QueueUrl"]


def _attributes(client: SQSClient, url: str) -> dict[str, int]:
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {str(key): int(value) for key, value in attributes.items()}


def _peek_oldest_age(client: SQSClient, url: str, now: datetime) -> float | None:
    messages = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
        WaitTimeSeconds=0,
        AttributeNames=["SentTimestamp"],
    ).get("Messages", [])
    sent = [int(m["Attributes"]["SentTimestamp"]) for m in messages if "Attributes" in m]
    if not sent:
        return None
    return max(0.0, now.timestamp() - min(sent) / 1000)


def _oldest_work_ages(now: datetime) -> dict[str, float]:
    from conversations.models import Message
    from webhooks.models import WebhookEvent

    oldest: dict[str, datetime | None] = {
        "incoming": WebhookEvent.objects.filter(state=WebhookEvent.State.QUEUED).aggregate(
            oldest=Min("queued_at")
        )["oldest"],
        "outgoing": Message.objects.filter(
            status=Message.Status.QUEUED,
            direction=Message.Direction.OUTBOUND,
            queued_at__isnull=False,
        )
        .exclude(next_attempt_at__gt=now)
        .aggregate(oldest=Min("queued_at"))["oldest"],
    }
    return {
        queue: max(0.0, (now - moment).total_seconds())
        for queue, moment in oldest.items()
        if moment is not None
    }


def queue_depths(client: SQSClient | None = None) -> list[QueueDepth]:
    """Every work queue's depths and its dead-letter queue's; raises QueuesUnavailable."""
    client = client or monitoring_sqs_client()
    now = timezone.now()
    ages = _oldest_work_ages(now)
    depths = []
    try:
        for queue in settings.WORK_QUEUES:
            work = _attributes(client, _queue_url(client, queue))
            dlq_url = _queue_url(client, queue + settings.DEAD_LETTER_SUFFIX)
            dead = _attributes(client, dlq_url)
            dead_count = sum(dead.values())
            depths.append(
                QueueDepth(
                    queue=queue,
                    visible=work["ApproximateNumberOfMessages"],
                    in_flight=work["ApproximateNumberOfMessagesNotVisible"],
                    delayed=work["ApproximateNumberOfMessagesDelayed"],
                    dead_letters=dead_count,
                    oldest_age_seconds=ages.get(queue),
                    dead_letter_oldest_age_seconds=(
                        _peek_oldest_age(client, dlq_url, now) if dead_count else None
                    ),
                )
            )
    except Exception as exc:
        raise QueuesUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from exc
    return depths


def queue_samples_record(*, depths: list[QueueDepth], keep: timedelta) -> None:
    """Store one sample per queue for the dashboard; drop samples older than `keep`."""
    from whatsapp_platform.monitoring.models import QueueSample

    now = timezone.now()
    QueueSample.objects.bulk_create(
        [
            QueueSample(
                queue=d.queue,
                visible=d.visible,
                in_flight=d.in_flight,
                delayed=d.delayed,
                dead_letters=d.dead_letters,
                sampled_at=now,
            )
            for d in depths
        ]
    )
    QueueSample.objects.filter(sampled_at__lt=now - keep).delete()
