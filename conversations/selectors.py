"""Reads of messages, always scoped to one organization."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.db.models import QuerySet

from conversations.models import Message
from whatsapp_platform.models import Organization


def _messages(organization: Organization) -> QuerySet[Message]:
    return Message.tenant.for_organization(organization).select_related(
        "channel", "contact", "campaign_audience"
    )


def message_ids_locked_for_link(*, ids: Iterable[int]) -> set[int]:
    """Of these messages, the ones that still exist, each locked until the transaction ends
    the way a foreign-key check locks it (FOR KEY SHARE).

    References to a message have no database constraint (see Message.reply_to), so a row that
    links an existing message calls this in the transaction that writes the link: archival's
    delete then waits for that commit and clears the link, and a message archived meanwhile
    is not returned. Status updates of the message are not held up.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    if connection.vendor != "postgresql":
        return set(Message.objects.filter(id__in=wanted).values_list("id", flat=True))
    assert not transaction.get_autocommit(), "the lock must be held by the linking transaction"
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT id FROM "{Message._meta.db_table}" WHERE id = ANY(%s) '  # noqa: S608
            "ORDER BY id FOR KEY SHARE",
            [wanted],
        )
        return {row[0] for row in cursor.fetchall()}


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
