"""kombu's SQS transport, made to go on consuming after SQS was unreachable.

When a long poll fails (SQS restarting, a network cut), kombu's asynchronous client hands the
receive callback something other than SQS's answer; the callback raises, the next poll of that
queue is never scheduled, and the worker stays up without consuming again (celery/kombu#1127).
Here such an answer counts as no messages, so the next poll is scheduled as usual.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import SQS

logger = logging.getLogger(__name__)


class Channel(SQS.Channel):  # type: ignore[misc]
    def _on_messages_ready(self, queue: Any, qname: str, messages: Any) -> int:
        if not isinstance(messages, dict):
            logger.warning("A receive from SQS queue %s failed; polling it again", qname)
            return 0
        return int(super()._on_messages_ready(queue, qname, messages))  # type: ignore[misc]


class Transport(SQS.Transport):  # type: ignore[misc]
    Channel = Channel
