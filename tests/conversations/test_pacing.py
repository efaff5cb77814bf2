"""A channel's rate limit, shared by all workers through PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from conversations import pacing
from conversations.models import Message
from conversations.sending import message_queue
from conversations.tasks import send_messages
from tests.conftest import Worker, wait_for
from tests.factories import ChannelFactory, ContactFactory, MessageFactory
from tests.fakes import ProviderState
from whatsapp_platform.models import Channel


def max_in_any_second(times: list[float]) -> int:
    """The most events in any sliding one-second window."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.django_db
def test_a_campaign_uses_the_full_rate_alone_and_its_share_while_other_sends_flow() -> None:
    channel = ChannelFactory(messages_per_second=20)
    full = pacing.slot_interval(20)

    alone = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=3, campaign=True, max_wait=2
    )
    assert (alone.granted, alone.interval) == (3, full)
    assert 1 / full >= 0.95 * 20  # ~95 % of the limit

    api = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=1, campaign=False, max_wait=2
    )
    assert api.granted == 1
    time.sleep(api.delay + full)
    shared = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=3, campaign=True, max_wait=2
    )
    assert shared.granted == 3
    assert shared.interval == pytest.approx(full / settings.CAMPAIGN_RATE_SHARE)


@pytest.mark.django_db
def test_a_campaign_yields_while_other_sends_hold_the_next_slots() -> None:
    channel = ChannelFactory(messages_per_second=20)

    api = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=38, campaign=False, max_wait=2
    )
    campaign = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=5, campaign=True, max_wait=2
    )
    another = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=1, campaign=False, max_wait=2
    )
    too_far = pacing.slots_reserve(
        channel_id=channel.id, messages_per_second=20, count=1, campaign=False, max_wait=0.5
    )

    assert api.granted == 38
    assert campaign.granted == 0
    assert campaign.delay > 1
    assert another.granted == 1  # API sends still queue up behind other API sends
    assert too_far.granted == 0


@pytest.fixture
def second_worker(
    celery_worker: Worker, providers: tuple[str, ProviderState], tmp_path: Path
) -> Iterator[Worker]:
    worker = Worker(tmp_path / "second-worker.log", providers[0])
    worker.start()
    yield worker
    worker.stop()


@pytest.mark.django_db(transaction=True)
def test_the_rate_limit_holds_across_two_worker_processes(
    meta_channel: Channel, provider_api: ProviderState, second_worker: Worker
) -> None:
    Channel.objects.filter(id=meta_channel.id).update(messages_per_second=20)
    meta_channel.refresh_from_db()
    recent = timezone.now() - timedelta(hours=1)
    contacts = [
        ContactFactory(organization=meta_channel.organization, last_inbound_at=recent)
        for _ in range(100)
    ]
    campaign = [
        MessageFactory(
            channel=meta_channel,
            contact=contact,
            type="text",
            content={"body": "Sale"},
            status="queued",
            priority=Message.Priority.LOW,
        ).id
        for contact in contacts[:60]
    ]

    # Two campaign chunks and a burst of API sends, all at once, on two worker processes.
    send_messages.delay(campaign[:30], True)
    send_messages.delay(campaign[30:], True)
    api = [
        message_queue(channel=meta_channel, contact=contact, type="text", content={"body": "Hi"})[
            0
        ].id
        for contact in contacts[60:]
    ]

    everything = campaign + api
    wait_for(
        lambda: Message.objects.filter(id__in=everything, status="sent").count() == 100,
        timeout=120,
    )
    sends = provider_api.sends()
    assert sorted(int(s.json()["biz_opaque_callback_data"]) for s in sends) == sorted(everything)
    assert max_in_any_second([s.at for s in sends]) <= 20
