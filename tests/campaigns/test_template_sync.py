"""Template sync from Meta's Graph API and Twilio's Content API, the command and the admin."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, MessageTemplate
from campaigns.tasks import sync_all_templates
from campaigns.template_sync import channel_templates_sync
from tests.conftest import wait_for
from tests.factories import CampaignFactory, ChannelFactory, MessageTemplateFactory
from tests.fakes import ProviderState
from whatsapp_platform.lib.providers.errors import ProviderRetryableError
from whatsapp_platform.models import Channel

Status = MessageTemplate.Status


def meta_template(name: str, status: str = "APPROVED", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order update"},
            {
                "type": "BODY",
                "text": f"Hi {{{{1}}}}, {name} for order {{{{2}}}}.",
                "example": {"body_text": [["Dana", "#48213"]]},
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
        ],
        "language": "en_US",
        "status": status,
        "category": "UTILITY",
        "id": f"9{zlib.crc32(name.encode()):014d}",
        "rejected_reason": "NONE",
        **extra,
    }


def twilio_content(
    sid_char: str, name: str, status: str, category: str = "UTILITY", reason: str = ""
) -> dict[str, Any]:
    sid = "HX" + sid_char * 32
    return {
        "date_created": "2026-10-01T10:00:00Z",
        "date_updated": "2026-11-01T10:00:00Z",
        "sid": sid,
        "account_sid": "AC" + "0" * 32,
        "friendly_name": f"{name}_content",
        "language": "en",
        "variables": {"1": "customer_name"},
        "types": {"twilio/text": {"body": f"Hello {{{{1}}}}, this is {name}."}},
        "url": f"https://content.twilio.com/v1/Content/{sid}",
        "links": {
            "approval_fetch": f"https://content.twilio.com/v1/Content/{sid}/ApprovalRequests",
            "approval_create": f"https://content.twilio.com/v1/Content/{sid}/ApprovalRequests/whatsapp",
        },
        "approval_requests": {
            "name": name,
            "category": category,
            "content_type": "twilio/text",
            "status": status,
            "rejection_reason": reason,
            "allow_category_change": True,
            "type": "whatsapp",
        },
    }


@pytest.mark.django_db
def test_meta_templates_are_stored_from_every_page(
    provider_api: ProviderState, meta_channel: Channel
) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [
        meta_template("order_shipped"),
        meta_template("order_delayed", "PENDING"),
        meta_template(
            "spring_sale", "REJECTED", category="MARKETING", rejected_reason="PROMOTIONAL"
        ),
        meta_template("old_promo", "PAUSED", category="MARKETING"),
        meta_template("login_code", "IN_APPEAL", category="AUTHENTICATION"),
    ]

    result = channel_templates_sync(channel_id=meta_channel.id)

    assert result.created == 5
    listing = [
        r for r in provider_api.requests if r.path.split("?")[0].endswith("/message_templates")
    ]
    assert len(listing) == 3  # two a page
    assert all(r.headers["Authorization"] == "Bearer EAAG-test-access-token" for r in listing)
    stored = {t.name: t for t in MessageTemplate.objects.filter(channel=meta_channel)}
    assert {name: t.status for name, t in stored.items()} == {
        "order_shipped": Status.APPROVED,
        "order_delayed": Status.PENDING,
        "spring_sale": Status.REJECTED,
        "old_promo": Status.PAUSED,
        "login_code": Status.PENDING,
    }
    shipped = stored["order_shipped"]
    assert shipped.body == "Hi {{1}}, order_shipped for order {{2}}."
    assert shipped.language == "en_US"
    assert shipped.category == MessageTemplate.Category.UTILITY
    assert shipped.provider_template_id == meta_template("order_shipped")["id"]
    assert [c["type"] for c in shipped.components] == ["HEADER", "BODY", "FOOTER"]
    assert shipped.synced_at is not None
    assert shipped.organization_id == meta_channel.organization_id
    assert stored["spring_sale"].status_reason == "PROMOTIONAL"
    assert stored["spring_sale"].category == MessageTemplate.Category.MARKETING
    assert "IN_APPEAL" in stored["login_code"].status_reason


@pytest.mark.django_db
def test_a_second_sync_updates_in_place_and_disables_templates_gone_at_meta(
    provider_api, meta_channel
) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [
        meta_template("order_shipped"),
        meta_template("order_delayed"),
    ]
    channel_templates_sync(channel_id=meta_channel.id)
    gone = MessageTemplate.objects.get(channel=meta_channel, name="order_delayed")
    campaign = CampaignFactory(template=gone, status=Campaign.Status.RUNNING)
    provider_api.meta_templates[meta_channel.waba_id] = [
        meta_template("order_shipped", "REJECTED", rejected_reason="INVALID_FORMAT")
    ]

    result = channel_templates_sync(channel_id=meta_channel.id)

    assert (result.created, result.updated, result.disabled) == (0, 1, 1)
    assert MessageTemplate.objects.filter(channel=meta_channel).count() == 2
    gone.refresh_from_db()
    assert gone.status == Status.DISABLED
    assert gone.status_reason == "No longer at the provider."
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert "order_delayed" in campaign.status_reason
    shipped = MessageTemplate.objects.get(channel=meta_channel, name="order_shipped")
    assert (shipped.status, shipped.status_reason) == (Status.REJECTED, "INVALID_FORMAT")


@pytest.mark.django_db
def test_a_template_going_paused_pauses_its_running_and_scheduled_campaigns(
    provider_api, meta_channel
) -> None:
    template = MessageTemplateFactory(channel=meta_channel, name="order_shipped", language="en_US")
    running = CampaignFactory(template=template, status=Campaign.Status.RUNNING)
    scheduled = CampaignFactory(template=template, status=Campaign.Status.SCHEDULED)
    draft = CampaignFactory(template=template, status=Campaign.Status.DRAFT)
    other_template = MessageTemplateFactory(channel=meta_channel, name="welcome", language="en_US")
    unrelated = CampaignFactory(template=other_template, status=Campaign.Status.RUNNING)
    provider_api.meta_templates[meta_channel.waba_id] = [
        meta_template("order_shipped", "PAUSED"),
        meta_template("welcome"),
    ]

    channel_templates_sync(channel_id=meta_channel.id)

    for campaign in (running, scheduled, draft, unrelated):
        campaign.refresh_from_db()
    assert running.status == Campaign.Status.PAUSED
    assert scheduled.status == Campaign.Status.PAUSED
    assert running.status_reason == "Template order_shipped (en_US) is paused."
    assert draft.status == Campaign.Status.DRAFT
    assert unrelated.status == Campaign.Status.RUNNING


@pytest.mark.django_db
def test_a_sync_leaves_other_tenants_templates_alone(provider_api, meta_channel) -> None:
    other_channel = ChannelFactory()  # another organization, another WABA
    theirs = MessageTemplateFactory(channel=other_channel, name="order_shipped", language="en_US")
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped", "PAUSED")]

    channel_templates_sync(channel_id=meta_channel.id)

    theirs.refresh_from_db()
    assert theirs.status == Status.APPROVED
    assert theirs.synced_at is None


@pytest.mark.django_db
def test_an_expired_meta_token_flags_the_channel_and_changes_no_template(
    provider_api, meta_channel
) -> None:
    template = MessageTemplateFactory(channel=meta_channel)
    meta_channel.access_token = "EAAG-expired"
    meta_channel.save()

    result = channel_templates_sync(channel_id=meta_channel.id)

    assert "Error validating access token" in result.error
    meta_channel.refresh_from_db()
    assert meta_channel.credential_error
    template.refresh_from_db()
    assert template.status == Status.APPROVED


@pytest.mark.django_db
def test_a_meta_outage_during_sync_is_retryable_and_stores_nothing(
    provider_api, meta_channel
) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped")]
    provider_api.listing_answers.append(
        (
            500,
            {
                "error": {
                    "message": "An unknown error has occurred.",
                    "type": "OAuthException",
                    "code": 1,
                    "fbtrace_id": "A1b2C3",
                }
            },
        )
    )

    with pytest.raises(ProviderRetryableError):
        channel_templates_sync(channel_id=meta_channel.id)

    assert not MessageTemplate.objects.filter(channel=meta_channel).exists()


@pytest.mark.django_db
def test_twilio_content_templates_are_stored_from_every_page(
    provider_api: ProviderState, twilio_channel: Channel
) -> None:
    provider_api.twilio_contents.extend(
        [
            twilio_content("a", "order_shipped", "approved"),
            twilio_content("b", "spring_sale", "rejected", "MARKETING", "Promotional content"),
            twilio_content("c", "order_delayed", "received"),
            twilio_content("d", "old_promo", "paused", "MARKETING"),
            twilio_content("e", "retired", "disabled"),
        ]
    )

    result = channel_templates_sync(channel_id=twilio_channel.id)

    assert result.created == 5
    listing = [r for r in provider_api.requests if r.path.startswith("/v1/ContentAndApprovals")]
    assert len(listing) == 3
    assert all(r.headers["Authorization"].startswith("Basic ") for r in listing)
    stored = {t.name: t for t in MessageTemplate.objects.filter(channel=twilio_channel)}
    assert {name: t.status for name, t in stored.items()} == {
        "order_shipped": Status.APPROVED,
        "spring_sale": Status.REJECTED,
        "order_delayed": Status.PENDING,
        "old_promo": Status.PAUSED,
        "retired": Status.DISABLED,
    }
    shipped = stored["order_shipped"]
    assert shipped.provider_template_id == "HX" + "a" * 32
    assert shipped.body == "Hello {{1}}, this is order_shipped."
    assert shipped.language == "en"
    assert stored["spring_sale"].status_reason == "Promotional content"
    assert stored["spring_sale"].category == MessageTemplate.Category.MARKETING


@pytest.mark.django_db
def test_a_twilio_template_going_paused_pauses_its_campaign(provider_api, twilio_channel) -> None:
    provider_api.twilio_contents.append(twilio_content("a", "order_shipped", "approved"))
    channel_templates_sync(channel_id=twilio_channel.id)
    template = MessageTemplate.objects.get(channel=twilio_channel, name="order_shipped")
    campaign = CampaignFactory(template=template, status=Campaign.Status.RUNNING)
    provider_api.twilio_contents[0] = twilio_content("a", "order_shipped", "paused")

    channel_templates_sync(channel_id=twilio_channel.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert campaign.status_reason == "Template order_shipped (en) is paused."


@pytest.mark.django_db
def test_a_wrong_twilio_auth_token_flags_the_channel(provider_api, twilio_channel) -> None:
    twilio_channel.auth_token = "not-the-token"
    twilio_channel.save()

    result = channel_templates_sync(channel_id=twilio_channel.id)

    assert result.error
    twilio_channel.refresh_from_db()
    assert twilio_channel.credential_error
    assert "not-the-token" not in twilio_channel.credential_error


@pytest.mark.django_db
def test_the_console_provider_has_nothing_to_sync(provider_api, organization) -> None:
    channel = Channel.objects.create(
        organization=organization, provider=Channel.Provider.CONSOLE, sender="whatsapp:+15550000000"
    )

    result = channel_templates_sync(channel_id=channel.id)

    assert (result.created, result.error) == (0, "")
    assert provider_api.requests == []


@pytest.mark.django_db
def test_the_command_syncs_one_channel(provider_api, meta_channel, twilio_channel, capsys) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped")]
    provider_api.twilio_contents.append(twilio_content("a", "hello", "approved"))

    call_command("sync_templates", "--channel", str(meta_channel.id))

    assert f"channel {meta_channel.id}: 1 new" in capsys.readouterr().out
    assert MessageTemplate.objects.filter(channel=meta_channel).count() == 1
    assert not MessageTemplate.objects.filter(channel=twilio_channel).exists()


@pytest.mark.django_db
def test_the_command_syncs_every_channel_and_reports_failures(
    provider_api, meta_channel, twilio_channel, capsys
) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped")]
    twilio_channel.auth_token = "not-the-token"
    twilio_channel.save()

    with pytest.raises(CommandError, match="1 of 2 channel"):
        call_command("sync_templates")

    captured = capsys.readouterr()
    assert f"channel {meta_channel.id}: 1 new" in captured.out
    assert f"channel {twilio_channel.id}: Content listing" in captured.err
    assert MessageTemplate.objects.filter(channel=meta_channel).count() == 1


@pytest.mark.django_db
def test_the_command_names_an_unknown_channel() -> None:
    with pytest.raises(CommandError, match="No channel has id 987654"):
        call_command("sync_templates", "--channel", "987654")


@pytest.fixture
def admin_client(db) -> Client:
    user = User.objects.create_superuser("root", "root@example.test", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_the_admin_action_syncs_the_selected_templates_channels_in_the_worker(
    provider_api, meta_channel, admin_client
) -> None:
    stale = MessageTemplateFactory(channel=meta_channel, name="order_shipped", language="en_US")
    other = ChannelFactory()
    provider_api.meta_templates[meta_channel.waba_id] = [
        meta_template("order_shipped", "PAUSED"),
        meta_template("welcome"),
    ]

    response = admin_client.post(
        reverse("admin:campaigns_messagetemplate_changelist"),
        {"action": "sync_channels", "_selected_action": [stale.id]},
        follow=True,
    )

    assert "Template sync queued for 1 channel(s)." in response.content.decode()
    wait_for(lambda: MessageTemplate.objects.filter(channel=meta_channel).count() == 2)
    stale.refresh_from_db()
    assert stale.status == Status.PAUSED
    assert not MessageTemplate.objects.filter(channel=other).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_the_sync_all_button_syncs_every_channel_in_the_worker(
    provider_api, meta_channel, twilio_channel, admin_client
) -> None:
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped")]
    provider_api.twilio_contents.append(twilio_content("a", "hello", "approved"))

    changelist = admin_client.get(reverse("admin:campaigns_messagetemplate_changelist"))
    assert "Sync all templates from the providers" in changelist.content.decode()
    response = admin_client.post(reverse("admin:campaigns_messagetemplate_sync"), follow=True)

    assert "Template sync queued for 2 channel(s)." in response.content.decode()
    wait_for(lambda: MessageTemplate.objects.filter(channel=twilio_channel).exists())
    wait_for(lambda: MessageTemplate.objects.filter(channel=meta_channel).exists())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_the_daily_task_syncs_every_active_channel(
    provider_api, meta_channel, twilio_channel, settings
) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["sync-all-templates"]["task"] == sync_all_templates.name
    inactive = ChannelFactory(is_active=False)
    provider_api.meta_templates[meta_channel.waba_id] = [meta_template("order_shipped")]
    provider_api.meta_templates[inactive.waba_id] = [meta_template("order_shipped")]
    provider_api.twilio_contents.append(twilio_content("a", "hello", "approved"))

    sync_all_templates.delay()

    wait_for(lambda: MessageTemplate.objects.filter(channel=meta_channel).exists())
    wait_for(lambda: MessageTemplate.objects.filter(channel=twilio_channel).exists())
    assert not MessageTemplate.objects.filter(channel=inactive).exists()


@pytest.mark.django_db
def test_the_token_never_follows_a_next_page_off_the_graph_api(provider_api, meta_channel):
    provider_api.listing_answers.append(
        (
            200,
            {
                "data": [meta_template("order_shipped")],
                "paging": {"next": "https://collector.example.test/v26.0/1/message_templates"},
            },
        )
    )

    result = channel_templates_sync(channel_id=meta_channel.id)

    assert "not on the Graph API" in result.error
    assert not MessageTemplate.objects.filter(channel=meta_channel).exists()
    meta_channel.refresh_from_db()
    assert not meta_channel.credential_error
