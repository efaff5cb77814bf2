"""The dead-letter queues: list what failed, send it back to its queue, or purge it.

A dead letter is either a copy PlatformTask made of a task that failed for good (its
`dead_letter` header holds the error and the source queue), or a message SQS's redrive policy
moved after too many deliveries (a worker died on it; it has no such header). Listing hides the
messages while it scans and shows them again at the end, so nothing is consumed. A redrive
publishes the task again, with the same task id, to its source queue and only then deletes the
dead letter: at worst a crash in between runs it twice, which idempotent tasks allow.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

from whatsapp_platform.lib.sqs import decode_task_message, queue_name
from whatsapp_platform.monitoring.logs import TASK_HEADER, correlation_id, correlation_id_from
from whatsapp_platform.monitoring.queues import monitoring_sqs_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger(__name__)

SCAN_LIMIT = 1000
# Long enough to scan a full queue; the messages are made visible again at the end anyway.
SCAN_VISIBILITY_SECONDS = 60


class UnknownQueue(ValueError):
    pass


@dataclass(frozen=True)
class DeadLetter:
    id: str  # the SQS message id
    queue: str  # the work queue it came from
    task: str
    task_id: str
    arguments: str  # a short summary: ids and small scalars, cut to 200 characters
    error: str
    failed_at: str | None
    retries: int | None
    receive_count: int
    dead_lettered_by: str  # "task" (PlatformTask) or "redrive" (SQS, after repeated deliveries)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _queues(queue: str | None) -> list[str]:
    if queue is None:
        return list(settings.WORK_QUEUES)
    if queue not in settings.WORK_QUEUES:
        raise UnknownQueue(f"Unknown queue {queue!r}; one of: {', '.join(settings.WORK_QUEUES)}.")
    return [queue]


def _dlq_url(client: SQSClient, queue: str) -> str:
    return client.get_queue_url(QueueName=queue_name(queue + settings.DEAD_LETTER_SUFFIX))[
        "QueueUrl"
    ]


def _summary(args: list[Any], kwargs: dict[str, Any]) -> str:
    text = json.dumps({"args": args, "kwargs": kwargs}, default=str, separators=(",", ":"))
    return text if len(text) <= 200 else text[:199] + "…"


def _describe(queue: str, message: MessageTypeDef) -> DeadLetter:
    attributes = message.get("Attributes", {})
    receive_count = int(attributes.get("ApproximateReceiveCount", "0") or 0)
    try:
        task = decode_task_message(message["Body"])
    except Exception:
        return DeadLetter(
            message["MessageId"], queue, "", "", "", "not a task message", None, None,
            receive_count, "redrive",
        )  # fmt: skip
    header = task.headers.get("dead_letter")
    if isinstance(header, dict):
        error = str(header.get("error", ""))
        failed_at = header.get("failed_at")
        retries = header.get("retries")
        by = "task"
    else:
        sent = attributes.get("SentTimestamp")
        error = (
            f"moved by the queue's redrive policy after {settings.SQS_MAX_RECEIVE_COUNT} "
            "deliveries: the worker died or could not record the failure"
        )
        failed_at = datetime.fromtimestamp(int(sent) / 1000, tz=UTC).isoformat() if sent else None
        retries = task.headers.get("retries")
        by = "redrive"
    return DeadLetter(
        id=message["MessageId"],
        queue=queue,
        task=task.task,
        task_id=task.task_id,
        arguments=_summary(task.args, task.kwargs),
        error=error,
        failed_at=failed_at,
        retries=retries if isinstance(retries, int) else None,
        receive_count=receive_count,
        dead_lettered_by=by,
    )


def _scan(client: SQSClient, url: str, limit: int) -> list[MessageTypeDef]:
    """Receive every message (up to `limit`), hidden until `_release` shows them again."""
    found: dict[str, MessageTypeDef] = {}
    while len(found) < limit:
        batch = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=SCAN_VISIBILITY_SECONDS,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            found.setdefault(message["MessageId"], message)
    return list(found.values())


def _release(client: SQSClient, url: str, messages: list[MessageTypeDef]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        client.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ],
        )


def _delete(client: SQSClient, url: str, message: MessageTypeDef) -> None:
    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def dead_letters_list(*, queue: str | None = None, limit: int = SCAN_LIMIT) -> list[DeadLetter]:
    client = monitoring_sqs_client()
    letters: list[DeadLetter] = []
    for name in _queues(queue):
        url = _dlq_url(client, name)
        messages = _scan(client, url, limit)
        try:
            letters += [_describe(name, m) for m in messages]
        finally:
            _release(client, url, messages)
    return letters


def _select(
    client: SQSClient, queue: str, ids: set[str] | None
) -> tuple[str, list[MessageTypeDef], list[MessageTypeDef]]:
    url = _dlq_url(client, queue)
    messages = _scan(client, url, SCAN_LIMIT)
    chosen = [m for m in messages if ids is None or m["MessageId"] in ids]
    others = [m for m in messages if ids is not None and m["MessageId"] not in ids]
    return url, chosen, others


def dead_letters_redrive(*, queue: str | None = None, ids: list[str] | None = None) -> int:
    """Send the chosen dead letters (all when `ids` is None) back to their source queue."""
    from whatsapp_platform.celery import app

    client = monitoring_sqs_client()
    wanted = set(ids) if ids is not None else None
    redriven = 0
    for name in _queues(queue):
        url, chosen, others = _select(client, name, wanted)
        try:
            for message in chosen:
                try:
                    task = decode_task_message(message["Body"])
                except Exception:
                    others.append(message)  # not a task: left for a purge
                    continue
                header = task.headers.get("dead_letter")
                source = header.get("source_queue") if isinstance(header, dict) else None
                token = correlation_id.set(
                    correlation_id_from(task.headers.get(TASK_HEADER), several=True)
                )
                try:
                    app.send_task(
                        task.task,
                        args=task.args,
                        kwargs=task.kwargs,
                        task_id=task.task_id,
                        queue=source if source in settings.WORK_QUEUES else name,
                    )
                finally:
                    correlation_id.reset(token)
                _delete(client, url, message)
                redriven += 1
                logger.info("Redrove task %s[%s] to %s", task.task, task.task_id, name)
        finally:
            _release(client, url, others)
    return redriven


def dead_letters_purge(*, queue: str | None = None, ids: list[str] | None = None) -> int:
    """Delete the chosen dead letters (all when `ids` is None) for good."""
    client = monitoring_sqs_client()
    wanted = set(ids) if ids is not None else None
    purged = 0
    for name in _queues(queue):
        url, chosen, others = _select(client, name, wanted)
        try:
            for message in chosen:
                _delete(client, url, message)
                purged += 1
        finally:
            _release(client, url, others)
        if purged:
            logger.info("Purged %s dead letter(s) of %s", purged, name)
    return purged
