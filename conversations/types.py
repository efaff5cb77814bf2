"""What a provider told us, in the platform's terms: the input of the messaging services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MediaRef:
    media_id: str  # Meta media id (expires after 7 days)
    url: str  # Twilio media URL, or a plain URL
    mime_type: str
    filename: str


@dataclass(frozen=True)
class InboundMessage:
    provider_message_id: str
    wa_id: str | None
    user_id: str | None  # business-scoped user id, for users known by username only
    profile_name: str
    username: str
    type: str
    text: str
    content: dict[str, Any]
    timestamp: datetime | None
    reply_to_provider_id: str | None
    media: MediaRef | None
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    provider_message_id: str
    status: str
    timestamp: datetime | None
    error_code: str = ""
    error_title: str = ""
    error_details: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Our own message id, echoed by the provider (Meta's biz_opaque_callback_data, the message_id
    # of Twilio's callback URL): reconciles a send whose provider id was never recorded.
    our_message_id: int | None = None
