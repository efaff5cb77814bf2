"""The sandbox backend of `make run`: messages are accepted and written to the outbox file.

Nothing leaves the machine. The outbox (`var/console-outbox.jsonl`) holds one JSON object per
message, so a newcomer can see what the platform would have sent; logs name only ids.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import TYPE_CHECKING

from django.conf import settings

from whatsapp_platform.lib.providers.base import OutboundMessage, SendResult
from whatsapp_platform.lib.providers.errors import refuse_if_past

if TYPE_CHECKING:
    from whatsapp_platform.models import Channel

logger = logging.getLogger(__name__)
_lock = threading.Lock()


class ConsoleBackend:
    def send(
        self, channel: Channel, message: OutboundMessage, *, not_after: float | None = None
    ) -> SendResult:
        refuse_if_past(not_after)
        provider_message_id = f"console.{uuid.uuid4().hex}"
        record = {
            "id": provider_message_id,
            "message_id": message.message_id,
            "channel_id": channel.id,
            "to": message.to,
            "type": message.type,
            "content": message.content,
        }
        with _lock, (settings.VAR_DIR / "console-outbox.jsonl").open("a") as outbox:
            outbox.write(json.dumps(record) + "\n")
        logger.info("Console channel %s accepted message %s", channel.id, message.message_id)
        return SendResult(provider_message_id=provider_message_id)
