"""Keep a long task's SQS message invisible while the task runs (ChangeMessageVisibility).

SQS hands a message to another consumer once its visibility timeout passes, even while the first
one is still working on it; neither kombu nor Celery extends it. A heartbeat thread pushes the
timeout ahead every third of it until the task ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings

from whatsapp_platform.lib.sqs import sqs_client

logger = logging.getLogger(__name__)


def _receipt(request: Any) -> tuple[str, str] | None:
    """(queue URL, receipt handle) of the task's SQS message; None on other brokers."""
    properties = getattr(request, "properties", None) or {}
    receipt = properties.get("delivery_tag")
    queue_url = (properties.get("delivery_info") or {}).get("sqs_queue")
    if isinstance(receipt, str) and isinstance(queue_url, str) and queue_url:
        return queue_url, receipt
    return None


@contextmanager
def visibility_heartbeat(request: Any, timeout: int | None = None) -> Iterator[int]:
    """While the block runs, keep the message of the task `request` invisible for `timeout`
    seconds ahead (SQS_VISIBILITY_TIMEOUT by default). Yields the heartbeat interval in
    seconds, 0 when the task came from another broker and has no SQS message."""
    found = _receipt(request)
    if found is None:
        yield 0
        return
    queue_url, receipt = found
    timeout = timeout or settings.SQS_VISIBILITY_TIMEOUT
    interval = max(1, timeout // 3)
    stop = threading.Event()
    client = sqs_client()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                client.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=timeout
                )
            except Exception as exc:
                # The message is gone (acknowledged) or SQS is unreachable: the task goes on.
                logger.warning("Visibility heartbeat failed: %s", type(exc).__name__)

    thread = threading.Thread(target=beat, name="sqs-visibility-heartbeat", daemon=True)
    thread.start()
    try:
        yield interval
    finally:
        stop.set()
        thread.join()
