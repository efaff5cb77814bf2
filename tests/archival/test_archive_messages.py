"""Message archival: batches by day, verified before delete, restorable, dry runs, retention."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.forms.models import model_to_dict
from django.utils import timezone

from archival.models import ArchiveBatch, ArchiveRun
from archival.services import ArchiveJobBusy, archive_run_create
from campaigns.models import Campaign, CampaignAudience
from conversations.models import MediaAsset, Message
from tests.archival.conftest import make_old, old_messages, read_archive
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    OrganizationFactory,
)
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.storage import ArchiveStorage

pytestmark = pytest.mark.django_db


def snapshot(model: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    return {
        row.id: {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields}
        for row in model.objects.filter(id__in=ids)
    }


def test_archive_then_restore_gives_back_equal_rows(
    storage: ArchiveStorage, org_channel: Any
) -> None:
    messages = old_messages(org_channel, 5, days=100, content={"a": [1, "ü"]}, billing={"x": 1})
    first = messages[0]
    Message.objects.filter(id=messages[1].id).update(reply_to=first)
    asset = MediaAsset.objects.create(
        organization=org_channel.organization,
        message=first,
        filename="photo.jpg",
        storage_key="archived-media/x/photo.jpg",
        state=MediaAsset.State.ARCHIVED,
    )
    recent = MessageFactory(channel=org_channel)
    ids = [m.id for m in messages]
    before = snapshot(Message, ids)
    asset_before = snapshot(MediaAsset, [asset.id])

    out = StringIO()
    call_command("archive_messages", "--batch-size", "2", stdout=out)

    assert not Message.objects.filter(id__in=ids).exists()
    assert Message.objects.filter(id=recent.id).exists()
    assert not MediaAsset.objects.filter(id=asset.id).exists()
    batches = list(ArchiveBatch.objects.filter(kind="messages"))
    # Five messages over two days, two a batch: two batches one day, one the other.
    assert len(batches) == 3
    assert all(b.state == "stored" and b.sha256 and b.size for b in batches)
    day = batches[0].day
    assert batches[0].key == (
        f"archived-messages/year={day:%Y}/month={day:%m}/day={day:%d}/"
        f"messages-{day:%Y-%m-%d}-batch-001.json.gz"
    )
    assert sorted(storage.keys("archived-messages/")) == sorted(b.key for b in batches)
    for batch in batches:
        stored = storage.stat(batch.key)
        assert stored is not None
        assert (stored.size, stored.sha256) == (batch.size, batch.sha256)
    lines = read_archive(storage)
    assert sorted(
        line["row"]["id"]
        for line in lines
        if line["table"] == "conversations_message" and "row" in line  # not a relink line
    ) == sorted(ids)
    run = ArchiveRun.objects.get(job_type="messages")
    assert (run.state, run.rows_archived, run.objects_written) == ("succeeded", 5, 3)
    assert "succeeded" in out.getvalue()

    call_command(
        "restore_messages", "--from", "2000-01-01", "--to", "2100-01-01", stdout=StringIO()
    )

    assert snapshot(Message, ids) == before
    assert snapshot(MediaAsset, [asset.id]) == asset_before
    # Back in the database, so no longer in the archive.
    assert list(storage.keys("archived-messages/")) == []
    assert set(ArchiveBatch.objects.values_list("state", flat=True)) == {"restored"}


def test_restoring_a_key_twice_adds_nothing_the_second_time(
    local_storage: ArchiveStorage, org_channel: Any
) -> None:
    messages = old_messages(org_channel, 3, days=100)
    ids = [m.id for m in messages]
    call_command("archive_messages", stdout=StringIO())
    keys = list(ArchiveBatch.objects.values_list("key", flat=True))
    key = keys[0]
    # A copy of the object, as an operator might restore from a backup of the bucket.
    with local_storage.open(key) as raw:
        data = raw.read()
    from io import BytesIO

    call_command("restore_messages", "--key", key, stdout=StringIO())
    restored = Message.objects.filter(id__in=ids).count()

    local_storage.put_stream(key, BytesIO(data))
    out = StringIO()
    call_command("restore_messages", "--key", key, stdout=out)

    assert Message.objects.filter(id__in=ids).count() == restored
    assert restored > 0


def test_a_dry_run_reports_per_day_and_changes_nothing(
    storage: ArchiveStorage, org_channel: Any
) -> None:
    messages = old_messages(org_channel, 4, days=100)
    event = WebhookEvent.objects.create(provider="meta", body="{}", dedupe_key="k1")
    make_old(WebhookEvent.objects.filter(id=event.id), 100, "received_at")
    before = snapshot(Message, [m.id for m in messages])

    out = StringIO()
    call_command("archive_messages", "--dry-run", stdout=out)

    assert snapshot(Message, [m.id for m in messages]) == before
    assert WebhookEvent.objects.filter(id=event.id).exists()
    assert not ArchiveBatch.objects.exists()
    assert list(storage.keys("")) == []
    run = ArchiveRun.objects.get()
    assert run.dry_run
    assert run.state == "succeeded"
    days = run.report["days"]
    assert sum(day.get("messages", 0) for day in days.values()) == 4
    assert sum(day.get("webhook_events", 0) for day in days.values()) == 1
    assert len(days) == 2
    assert run.report["bytes_estimate"] > 0
    assert "Would archive 5 rows" in out.getvalue()


def test_webhook_events_are_archived_and_recent_ones_stay(local_storage: ArchiveStorage) -> None:
    old = WebhookEvent.objects.create(provider="meta", body='{"old": true}', dedupe_key="old")
    new = WebhookEvent.objects.create(provider="meta", body='{"new": true}', dedupe_key="new")
    make_old(WebhookEvent.objects.filter(id=old.id), 91, "received_at")

    call_command("archive_messages", stdout=StringIO())

    assert list(WebhookEvent.objects.values_list("id", flat=True)) == [new.id]
    (batch,) = ArchiveBatch.objects.filter(kind="webhook_events")
    assert "/webhook-events-" in batch.key
    assert [line["row"]["body"] for line in read_archive(local_storage)] == ['{"old": true}']


def test_retention_and_legal_hold_decide_what_is_archived(local_storage: ArchiveStorage) -> None:
    default_org = OrganizationFactory(name="Default")
    short = OrganizationFactory(name="Short", archive_after_days=10)
    held = OrganizationFactory(name="Held", legal_hold=True)
    kept_default = old_messages(ChannelFactory(organization=default_org), 2, days=20)
    archived_short = old_messages(ChannelFactory(organization=short), 2, days=20)
    kept_held = old_messages(ChannelFactory(organization=held), 2, days=200)

    call_command("archive_messages", stdout=StringIO())

    remaining = set(Message.objects.values_list("id", flat=True))
    assert {m.id for m in kept_default} <= remaining
    assert {m.id for m in kept_held} <= remaining
    assert not {m.id for m in archived_short} & remaining


def test_organization_and_older_than_options_narrow_a_run(local_storage: ArchiveStorage) -> None:
    acme = OrganizationFactory(name="Acme Two", slug="acme-two")
    other = OrganizationFactory(name="Other")
    mine = old_messages(ChannelFactory(organization=acme), 2, days=40)
    theirs = old_messages(ChannelFactory(organization=other), 2, days=40)

    call_command(
        "archive_messages", "--older-than", "30", "--organization", "acme-two", stdout=StringIO()
    )

    remaining = set(Message.objects.values_list("id", flat=True))
    assert not {m.id for m in mine} & remaining
    assert {m.id for m in theirs} <= remaining


def test_completed_campaign_keeps_its_figures_and_its_audience_goes_with_its_messages(
    local_storage: ArchiveStorage,
) -> None:
    campaign = CampaignFactory(
        status=Campaign.Status.COMPLETED, finished_at=timezone.now() - timedelta(days=95)
    )
    sent = old_messages(campaign.channel, 2, days=100, status=Message.Status.DELIVERED)
    audience = [
        CampaignAudience.objects.create(
            campaign=campaign, contact=m.contact, message=m, state="queued"
        )
        for m in sent
    ]
    skipped = CampaignAudience.objects.create(
        campaign=campaign,
        contact=ContactFactory(organization=campaign.organization),
        state="skipped",
        skip_reason="opted out",
    )
    running = CampaignFactory(status=Campaign.Status.RUNNING, template=campaign.template)
    live = old_messages(running.channel, 1, days=100)
    CampaignAudience.objects.create(campaign=running, contact=live[0].contact, message=live[0])

    call_command("archive_messages", stdout=StringIO())

    campaign.refresh_from_db()
    assert campaign.final_stats["recipients"] == 3
    assert not CampaignAudience.objects.filter(
        id__in=[a.id for a in audience] + [skipped.id]
    ).exists()
    # A running campaign's messages wait for it to end.
    assert Message.objects.filter(id=live[0].id).exists()
    tables = [line["table"] for line in read_archive(local_storage)]
    assert tables.count("campaigns_campaignaudience") == 3

    call_command(
        "restore_messages", "--from", "2000-01-01", "--to", "2100-01-01", stdout=StringIO()
    )

    assert CampaignAudience.objects.filter(campaign=campaign).count() == 3
    assert set(
        CampaignAudience.objects.filter(id__in=[a.id for a in audience]).values_list(
            "message_id", flat=True
        )
    ) == {m.id for m in sent}


def test_two_runs_of_the_same_job_never_run_at_once() -> None:
    first = archive_run_create(job_type="messages", triggered_by="command")

    with pytest.raises(ArchiveJobBusy) as busy:
        archive_run_create(job_type="messages", triggered_by="api")

    assert busy.value.run.id == first.id
    # Media is another job.
    assert archive_run_create(job_type="media", triggered_by="api").job_type == "media"
    assert model_to_dict(first)["state"] == "pending"


def test_rows_pointing_at_an_archived_message_are_unlinked_then_linked_again_on_restore(
    storage: ArchiveStorage, org_channel: Any
) -> None:
    from conversations.models import AiReply, Conversation
    from whatsapp_platform.monitoring.models import AnalyticsEvent

    (quoted,) = old_messages(org_channel, 1, days=100)
    organization = org_channel.organization
    conversation = Conversation.objects.create(
        organization=organization, channel=org_channel, contact=quoted.contact
    )
    reply = MessageFactory(channel=org_channel, contact=quoted.contact, reply_to=quoted)
    ai_reply = AiReply.objects.create(
        organization=organization,
        conversation=conversation,
        message=quoted,
        first_message_id=0,
        last_message_id=0,
        outcome=AiReply.Outcome.SENT,
    )
    event = AnalyticsEvent.objects.create(
        organization=organization,
        event_id="click-1",
        name="button_click",
        message=quoted,
        occurred_at=timezone.now(),
    )

    call_command("archive_messages", stdout=StringIO())

    assert ArchiveRun.objects.get(job_type="messages").state == "succeeded"
    assert not Message.objects.filter(id=quoted.id).exists()
    # Nothing is left pointing at a message that is no longer in the database.
    assert Message.objects.get(id=reply.id).reply_to_id is None
    assert AiReply.objects.get(id=ai_reply.id).message_id is None
    assert AnalyticsEvent.objects.get(id=event.id).message_id is None

    call_command(
        "restore_messages", "--from", "2000-01-01", "--to", "2100-01-01", stdout=StringIO()
    )

    assert Message.objects.get(id=reply.id).reply_to_id == quoted.id
    assert AiReply.objects.get(id=ai_reply.id).message_id == quoted.id
    assert AnalyticsEvent.objects.get(id=event.id).message_id == quoted.id
