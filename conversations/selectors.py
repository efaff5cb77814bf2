"""Reads of messages, always scoped to one organization."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from conversations.models import Message
from whatsapp_platform.models import Organization


def _messages(organization: Organization) -> QuerySet[Message]:
    return Message.tenant.for_organization(organization).select_related(
        "channel", "contact", "campaign_audience"
    )


def message_get(*, organization: Organization, message_id: int) -> Message | None:
    return _messages(organization).filter(id=message_id).first()


def message_list(
    *,
    organization: Organization,
    status: str | None = None,
    direction: str | None = None,
    wa_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Message]:
    messages = _messages(organization)
    if status:
        messages = messages.filter(status=status)
    if direction:
        messages = messages.filter(direction=direction)
    if wa_id:
        messages = messages.filter(contact__wa_id=wa_id)
    if created_after:
        messages = messages.filter(created_at__gte=created_after)
    if created_before:
        messages = messages.filter(created_at__lt=created_before)
    return messages


def message_status_history(message: Message) -> list[tuple[str, datetime]]:
    """The statuses a message went through, with their times, in order.

    From the message's own timestamps: each is written once, when its status is reached.
    """
    if message.direction == Message.Direction.INBOUND:
        return [(Message.Status.RECEIVED, message.created_at)]
    history = [
        (status, getattr(message, attribute))
        for status, attribute in Message.STATUS_TIMESTAMP.items()
        if getattr(message, attribute) is not None
    ]
    return sorted(history, key=lambda item: (item[1], Message.STATUS_RANK[item[0]]))
