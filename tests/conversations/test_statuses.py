"""Statuses applied to outbound messages, one at a time and in Meta-sized batches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from conversations.models import Message, PendingStatus
from conversations.services import message_statuses_apply
from conversations.types import StatusUpdate
from tests.factories import ChannelFactory, MessageFactory

pytestmark = pytest.mark.django_db

T1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
T2 = datetime(2026, 11, 1, 10, 5, tzinfo=UTC)


def status(message: Message, value: str, at: datetime = T1, **extra: Any) -> StatusUpdate:
    return StatusUpdate(
        provider_message_id=str(message.provider_message_id), status=value, timestamp=at, **extra
    )


@pytest.mark.parametrize("together", [True, False], ids=["batch", "one-by-one"])
def test_statuses_move_forward_record_skipped_steps_and_keep_errors(together: bool) -> None:
    channel = ChannelFactory()
    sent = MessageFactory(channel=channel, provider_message_id="wamid.A", status="sent")
    read = MessageFactory(channel=channel, provider_message_id="wamid.B", status="read")
    failing = MessageFactory(channel=channel, provider_message_id="wamid.C", status="sent")
    updates = [
        status(sent, "read", T2),
        status(read, "delivered", T1),
        status(failing, "failed", T1, error_code="131026", error_title="Message undeliverable"),
        status(sent, "sent", T1),  # the same message again, an older step: never backwards
        StatusUpdate(provider_message_id="wamid.UNKNOWN", status="delivered", timestamp=T1),
    ]
    batches = [updates] if together else [[u] for u in updates]

    counts = {"applied": 0, "recorded": 0, "pending": 0}
    for batch in batches:
        for key, value in message_statuses_apply(
            organization=channel.organization, provider="meta", updates=batch
        ).items():
            counts[key] += value

    assert counts == {"applied": 2, "recorded": 2, "pending": 1}
    for message in (sent, read, failing):
        message.refresh_from_db()
    assert (sent.status, sent.read_at, sent.sent_at) == ("read", T2, T1)
    assert (read.status, read.delivered_at) == ("read", T1)
    assert (failing.status, failing.error_code, failing.failed_at) == ("failed", "131026", T1)
    assert failing.error_message == "Message undeliverable"
    assert PendingStatus.objects.get().provider_message_id == "wamid.UNKNOWN"


def test_a_batch_never_touches_another_organizations_messages() -> None:
    mine = ChannelFactory()
    theirs = MessageFactory(provider_message_id="wamid.THEIRS", status="sent")
    ours = MessageFactory(channel=mine, provider_message_id="wamid.OURS", status="sent")

    message_statuses_apply(
        organization=mine.organization,
        provider="meta",
        updates=[status(theirs, "read"), status(ours, "read")],
    )

    theirs.refresh_from_db()
    ours.refresh_from_db()
    assert theirs.status == "sent"
    assert ours.status == "read"
