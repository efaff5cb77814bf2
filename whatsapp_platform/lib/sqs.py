"""SQS queues with their dead-letter queues, as the Celery queues need them.

kombu creates a missing queue on first use but never a dead-letter queue, so every queue is
created here first, each with its own `<name>-dlq` and a redrive policy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from django.conf import settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def sqs_client() -> SQSClient:
    return boto3.client(
        "sqs", region_name=settings.AWS_REGION, endpoint_url=settings.SQS_ENDPOINT_URL
    )


def queue_name(queue: str) -> str:
    """The SQS name of a Celery queue, as kombu derives it."""
    return f"{settings.SQS_QUEUE_PREFIX}{queue}".replace(".", "-")


@dataclass(frozen=True)
class QueueSetup:
    name: str
    url: str
    dead_letter_url: str
    created: bool


def _ensure_queue(client: SQSClient, name: str, attributes: dict[str, str]) -> tuple[str, bool]:
    try:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"], True  # type: ignore[arg-type]
    client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    return url, False


def ensure_queues(client: SQSClient | None = None) -> list[QueueSetup]:
    """Create or update every queue and its dead-letter queue. Safe to run again."""
    client = client or sqs_client()
    results = []
    for queue in settings.WORK_QUEUES:
        name = queue_name(queue)
        dlq_url, _ = _ensure_queue(
            client,
            queue_name(queue + settings.DEAD_LETTER_SUFFIX),
            {"MessageRetentionPeriod": str(settings.SQS_DEAD_LETTER_RETENTION_SECONDS)},
        )
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        url, created = _ensure_queue(
            client,
            name,
            {
                "VisibilityTimeout": str(settings.SQS_VISIBILITY_TIMEOUT),
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": dlq_arn,
                        "maxReceiveCount": str(settings.SQS_MAX_RECEIVE_COUNT),
                    }
                ),
            },
        )
        results.append(QueueSetup(name=name, url=url, dead_letter_url=dlq_url, created=created))
    return results


def queue_attributes(url: str, client: SQSClient | None = None) -> dict[str, str]:
    client = client or sqs_client()
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {str(name): value for name, value in attributes.items()}


@dataclass(frozen=True)
class TaskMessage:
    """A Celery task message as kombu stores it in an SQS message body."""

    task: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]


def decode_task_message(sqs_body: str) -> TaskMessage:
    envelope = json.loads(base64.b64decode(sqs_body))
    payload = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        payload = base64.b64decode(payload)
    args, kwargs, _embed = json.loads(payload)
    headers = envelope.get("headers", {})
    return TaskMessage(
        task=headers.get("task", ""),
        task_id=headers.get("id", ""),
        args=args,
        kwargs=kwargs,
        headers=headers,
    )
