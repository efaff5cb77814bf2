"""Campaign statistics over messages in every state, and the figures kept at completion."""

from __future__ import annotations

import pytest

from campaigns import services
from campaigns.models import Campaign, CampaignAudience
from campaigns.stats import campaign_stats
from conversations.models import Message
from tests.factories import CampaignFactory, ContactFactory, MessageFactory

pytestmark = pytest.mark.django_db

S = Message.Status


def _recipient(campaign: Campaign, status: str | None = None, **message_fields):
    contact = ContactFactory(organization=campaign.organization)
    message = None
    if status is not None:
        message = MessageFactory(
            channel=campaign.channel,
            contact=contact,
            type=Message.Type.TEMPLATE,
            status=status,
            **message_fields,
        )
    return CampaignAudience.objects.create(
        campaign=campaign,
        contact=contact,
        state=CampaignAudience.State.QUEUED if message else CampaignAudience.State.PENDING,
        message=message,
    )


def _reply_to(message: Message) -> Message:
    return MessageFactory(
        channel=message.channel,
        contact=message.contact,
        direction=Message.Direction.INBOUND,
        status=S.RECEIVED,
        reply_to=message,
    )


@pytest.fixture
def campaign() -> Campaign:
    """14 recipients, with messages in every state."""
    campaign = CampaignFactory(status=Campaign.Status.RUNNING)
    _recipient(campaign)  # not turned into a message yet
    skipped = _recipient(campaign)
    CampaignAudience.objects.filter(id=skipped.id).update(
        state=CampaignAudience.State.SKIPPED, skip_reason="opted_out"
    )
    for status in (S.QUEUED, S.SENDING, S.SENT, S.SENT, S.SENT, S.DELIVERED, S.DELIVERED):
        _recipient(campaign, status)
    read = [_recipient(campaign, S.READ).message for _ in range(2)]
    _recipient(campaign, S.FAILED, error_code="131026")
    _recipient(campaign, S.FAILED, error_code="opted_out")
    _recipient(campaign, S.FAILED, error_code="frequency_cap")
    # Two replies to one message count once; a reply to some other message not at all.
    _reply_to(read[0])
    _reply_to(read[0])
    _reply_to(read[1])
    _reply_to(MessageFactory(channel=campaign.channel, status=S.READ))
    # Another campaign's recipients are not this one's.
    other = CampaignFactory(template__channel=campaign.channel)
    _recipient(other, S.FAILED, error_code="131026")
    return campaign


def test_stats_count_every_state_with_rates(campaign, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(2):
        stats = campaign_stats(campaign=campaign)

    assert stats == {
        "recipients": 14,
        "pending": 1,
        "messages": 12,
        "queued": 2,
        "sent": 7,
        "delivered": 4,
        "read": 2,
        "failed": 1,
        "replied": 2,
        "skipped": 3,
        "delivery_rate": 0.5714,
        "read_rate": 0.2857,
        "reply_rate": 0.2857,
        "failure_rate": 0.125,
        "progress": 0.7857,
        "final": False,
    }


def test_an_empty_campaign_has_zero_rates() -> None:
    stats = campaign_stats(campaign=CampaignFactory())

    assert stats["recipients"] == 0
    assert (stats["delivery_rate"], stats["progress"]) == (0.0, 0.0)


def test_completion_keeps_the_figures_and_happens_once(campaign) -> None:
    services.campaign_complete(campaign.id)
    campaign.refresh_from_db()
    finished_at = campaign.finished_at

    services.campaign_complete(campaign.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.COMPLETED
    assert campaign.finished_at == finished_at
    assert campaign.final_stats["sent"] == 7
    assert campaign.final_stats["replied"] == 2
    assert campaign.final_stats["progress"] == 0.7857


def test_a_completed_campaign_still_counts_late_statuses_live(campaign) -> None:
    services.campaign_complete(campaign.id)
    Message.objects.filter(campaign_audience__campaign=campaign, status=S.DELIVERED).update(
        status=S.READ
    )

    campaign.refresh_from_db()
    stats = campaign_stats(campaign=campaign)

    assert stats["read"] == 4
    assert stats["final"] is False


def test_once_its_messages_are_archived_a_completed_campaign_answers_its_final_stats(
    campaign,
) -> None:
    services.campaign_complete(campaign.id)
    Message.objects.filter(direction=Message.Direction.INBOUND).delete()
    Message.objects.filter(campaign_audience__campaign=campaign).delete()

    campaign.refresh_from_db()
    stats = campaign_stats(campaign=campaign)

    assert stats["final"] is True
    assert (stats["sent"], stats["delivered"], stats["read"], stats["replied"]) == (7, 4, 2, 2)
    assert stats["recipients"] == 14
