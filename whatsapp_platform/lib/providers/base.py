"""The interface every sending backend implements, chosen by the channel's provider.

In the style of Django's e-mail backends: `backend_for(channel).send(channel, message)` sends one
message and answers the provider's id, or raises one of the errors of `errors.py`.

An outbound message's `content` is provider-neutral, by type:

- text: `{"body": "...", "preview_url": false}`
- template: `{"template": {"name": "order_shipped", "language": "en_US",
  "provider_template_id": "HX..." (Twilio's Content SID), "body_parameters": ["Dana", "#48213"],
  "header": null | {"type": "text", "parameters": ["..."]}
  | {"type": "image"|"video"|"document", "link": "https://...", "media_id": "...", "filename": "..."},
  "buttons": [{"index": 0, "sub_type": "quick_reply"|"url"|"copy_code", "parameter": "..."}]}}`
- image, audio, video, document, sticker: `{"media": {"link": "https://...", "media_id": "...",
  "caption": "...", "filename": "..."}}` (a link or a media id)
- interactive: `{"interactive": {...}}`, Meta's interactive object (reply buttons or a list)

Any type may carry `"reply_to": "<provider message id>"` to quote a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from whatsapp_platform.models import Channel


@dataclass(frozen=True)
class OutboundMessage:
    message_id: int  # ours: sent along so that status webhooks can name it
    to: str  # E.164 digits, or a business-scoped user id
    type: str
    content: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    # The recipient's WhatsApp id as the provider resolved it, when it says (Meta).
    wa_id: str = ""


class Backend(Protocol):
    def send(
        self, channel: Channel, message: OutboundMessage, *, not_after: float | None = None
    ) -> SendResult:
        """Send one message. With `not_after` (a `time.monotonic()` moment), a send that has
        not begun by then raises SendSlotMissed, having sent nothing."""
        ...


def backend_for(channel: Channel) -> Backend:
    from whatsapp_platform.lib.providers import console, meta, twilio

    backends: dict[str, Backend] = {
        "console": console.ConsoleBackend(),
        "meta": meta.MetaBackend(),
        "twilio": twilio.TwilioBackend(),
    }
    return backends[channel.provider]
