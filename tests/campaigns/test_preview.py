"""The preview before approval: who is left to receive it, and the messaging tier it takes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import CampaignAudience, MessageTemplate
from campaigns.selectors import campaign_preview
from conversations.models import Contact, Conversation
from tests.campaigns.conftest import add_audience
from tests.factories import CampaignFactory, ContactFactory

pytestmark = pytest.mark.django_db


def _campaign_with_every_kind_of_recipient(category: str):
    now = timezone.now()
    campaign = CampaignFactory(template__category=category)
    org = campaign.organization

    def contact(**fields):
        return ContactFactory(organization=org, **fields)

    recipients = {
        "plain_1": contact(),
        "plain_2": contact(),
        "opted_out": contact(opted_out_at=now - timedelta(days=3)),
        "skipped_at_import": contact(),
        "bad_number": contact(wa_id="12"),
        "no_number": contact(wa_id=None, user_id="US.13491208655302741918"),
        "held": contact(marketing_held_until=now + timedelta(hours=5)),
        "capped": contact(last_marketing_at=now - timedelta(hours=2)),
        "marketed_long_ago": contact(last_marketing_at=now - timedelta(hours=30)),
        "open_window": contact(last_inbound_at=now - timedelta(hours=1)),
        "messaged_today": contact(),
    }
    add_audience(campaign, recipients.values())
    CampaignAudience.objects.filter(
        campaign=campaign, contact=recipients["skipped_at_import"]
    ).update(state=CampaignAudience.State.SKIPPED, skip_reason="opted_out")
    Conversation.objects.create(
        organization=org,
        channel=campaign.channel,
        contact=recipients["messaged_today"],
        business_initiated_at=now - timedelta(hours=2),
    )
    return campaign, recipients


def _conversations_opened(campaign, count: int, hours_ago: float) -> None:
    org = campaign.organization
    when = timezone.now() - timedelta(hours=hours_ago)
    contacts = Contact.objects.bulk_create(
        Contact(organization=org, wa_id=f"4915{hours_ago:03.0f}{n:07d}") for n in range(count)
    )
    Conversation.objects.bulk_create(
        Conversation(
            organization=org, channel=campaign.channel, contact=c, business_initiated_at=when
        )
        for c in contacts
    )


def test_a_marketing_preview_leaves_out_opt_outs_invalid_numbers_and_capped_contacts() -> None:
    campaign, _ = _campaign_with_every_kind_of_recipient(MessageTemplate.Category.MARKETING)

    preview = campaign_preview(campaign=campaign)

    assert preview.recipients == 11
    assert preview.opted_out == 2
    assert preview.invalid_numbers == 2
    assert preview.marketing_held == 1
    assert preview.frequency_capped == 1
    assert preview.eligible == 5
    # Not the open window, not the one the channel already messaged today.
    assert preview.new_conversations == 3
    assert (preview.messaging_tier, preview.tier_used, preview.tier_remaining) == (250, 1, 249)
    assert preview.warnings == []


def test_a_utility_template_is_not_held_by_the_marketing_caps() -> None:
    campaign, _ = _campaign_with_every_kind_of_recipient(MessageTemplate.Category.UTILITY)

    preview = campaign_preview(campaign=campaign)

    assert (preview.marketing_held, preview.frequency_capped) == (0, 0)
    assert preview.eligible == 7
    assert preview.new_conversations == 5


def test_a_campaign_larger_than_what_is_left_of_the_tier_is_warned_about() -> None:
    campaign, _ = _campaign_with_every_kind_of_recipient(MessageTemplate.Category.MARKETING)
    _conversations_opened(campaign, 248, hours_ago=3)  # within the rolling 24 hours
    _conversations_opened(campaign, 40, hours_ago=30)  # outside it

    preview = campaign_preview(campaign=campaign)

    assert (preview.tier_used, preview.tier_remaining) == (249, 1)
    assert preview.new_conversations == 3
    assert len(preview.warnings) == 1
    assert "3 new conversations" in preview.warnings[0]
    assert "1 of its 250 per 24 hours left" in preview.warnings[0]
    assert "2 recipients would not be reached" in preview.warnings[0]


def test_an_unlimited_channel_has_no_tier_to_exceed() -> None:
    campaign, _ = _campaign_with_every_kind_of_recipient(MessageTemplate.Category.MARKETING)
    campaign.channel.messaging_tier = None
    campaign.channel.save(update_fields=["messaging_tier"])
    _conversations_opened(campaign, 300, hours_ago=1)

    preview = campaign_preview(campaign=campaign)

    assert (preview.messaging_tier, preview.tier_remaining) == (None, None)
    assert preview.warnings == []


def test_an_empty_audience_is_warned_about() -> None:
    preview = campaign_preview(campaign=CampaignFactory())

    assert preview.recipients == 0
    assert preview.warnings == ["No recipient can receive this campaign."]
