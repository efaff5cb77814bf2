"""Erasure of one contact, in the database and in the archive; setting up the S3 bucket."""

from __future__ import annotations

import gzip
import json
from io import BytesIO, StringIO
from typing import Any

import boto3
import pytest
from django.core.management import call_command
from django.test import Client

from archival.models import ArchiveBatch
from conversations.models import Contact, Conversation, MediaAsset, Message
from tests.archival.conftest import make_old, old_messages, read_archive
from tests.factories import ChannelFactory, ContactFactory, OrganizationFactory
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.storage import ArchiveStorage

pytestmark = pytest.mark.django_db


def _event(body: str, organization: Any, key: str, days: int) -> WebhookEvent:
    event = WebhookEvent.objects.create(
        provider="meta", body=body, dedupe_key=key, organization=organization
    )
    make_old(WebhookEvent.objects.filter(id=event.id), days, "received_at")
    return event


def test_erasing_a_contact_removes_them_from_the_database_and_rewrites_the_archive(
    storage: ArchiveStorage, staff_client: Client
) -> None:
    channel = ChannelFactory()
    org = channel.organization
    erased = ContactFactory(organization=org, wa_id="4915112345678")
    kept = ContactFactory(organization=org, wa_id="4915199999999")
    # A contact exists from their first message on: the events that name them come after.
    make_old(Contact.objects.filter(id=erased.id), 101)
    erased.refresh_from_db()
    conversation = Conversation.objects.create(organization=org, channel=channel, contact=erased)
    old_messages(channel, 3, days=100, contact=erased, conversation=conversation)
    kept_messages = old_messages(channel, 3, days=100, contact=kept)
    recent = Message.objects.create(
        organization=org,
        channel=channel,
        contact=erased,
        direction="in",
        provider="meta",
        status="received",
        text="still here",
    )
    first = Message.objects.filter(contact=erased).order_by("id").first()
    assert first is not None
    storage.put_stream("archived-media/x/1-photo.jpg", BytesIO(b"jpeg"))
    MediaAsset.objects.create(
        organization=org,
        message=first,
        storage_key="archived-media/x/1-photo.jpg",
        state=MediaAsset.State.ARCHIVED,
    )
    _event('{"wa_id":"4915112345678"}', org, "e1", days=100)
    _event('{"wa_id":"4915199999999"}', org, "e2", days=100)
    _event('{"wa_id":"4915112345678","recent":1}', org, "e3", days=1)
    call_command("archive_messages", "--batch-size", "4", stdout=StringIO())
    assert recent.id in set(Message.objects.values_list("id", flat=True))

    response = staff_client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": erased.id},
        content_type="application/json",
    )

    assert response.status_code == 200
    report = response.json()
    assert report["messages"] == 1  # the recent one, still in the database
    assert report["archived_rows"] == 3 + 1 + 1  # messages, their media row, an event
    assert report["webhook_events"] == 1
    assert report["conversations"] == 1
    assert report["media_objects"] == 1
    assert report["archive_objects_rewritten"]
    assert not Contact.objects.filter(id=erased.id).exists()
    assert not Message.objects.filter(contact_id=erased.id).exists()
    assert list(WebhookEvent.objects.values_list("dedupe_key", flat=True)) == []
    assert storage.size("archived-media/x/1-photo.jpg") is None
    lines = read_archive(storage)
    text = json.dumps(lines)
    assert "4915112345678" not in text
    assert all(line["row"].get("contact_id") != erased.id for line in lines)
    assert sorted(
        line["row"]["id"] for line in lines if line["table"] == "conversations_message"
    ) == sorted(m.id for m in kept_messages)
    assert "4915199999999" in text
    for batch in ArchiveBatch.objects.all():
        stored = storage.stat(batch.key)
        assert stored is not None
        assert stored.sha256 == batch.sha256
    # What is left restores whole.
    call_command(
        "restore_messages", "--from", "2000-01-01", "--to", "2100-01-01", stdout=StringIO()
    )
    assert set(Message.objects.values_list("contact_id", flat=True)) == {kept.id}


def test_erasure_leaves_no_older_version_in_a_versioned_bucket(
    aws_endpoint: str, settings: Any, staff_client: Client
) -> None:
    from tests.archival.conftest import empty_bucket
    from whatsapp_platform.lib.storage import archive_storage

    settings.ARCHIVE_S3_BUCKET = "test-archive-versioned"
    settings.S3_ENDPOINT_URL = aws_endpoint
    call_command("setup_storage", stdout=StringIO())
    empty_bucket(aws_endpoint, "test-archive-versioned")
    channel = ChannelFactory()
    erased = ContactFactory(organization=channel.organization, wa_id="4915100000042")
    old_messages(channel, 2, days=100, contact=erased)
    old_messages(channel, 2, days=100)
    call_command("archive_messages", "--batch-size", "10", stdout=StringIO())

    staff_client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": erased.id},
        content_type="application/json",
    )

    s3 = boto3.client("s3", endpoint_url=aws_endpoint, region_name=settings.AWS_REGION)
    versions = s3.list_object_versions(Bucket="test-archive-versioned").get("Versions", [])
    assert versions
    for version in versions:
        body = s3.get_object(
            Bucket="test-archive-versioned", Key=version["Key"], VersionId=version["VersionId"]
        )["Body"].read()
        assert b"4915100000042" not in gzip.decompress(body)
    assert len(versions) == len(list(archive_storage().keys("")))


def test_an_organization_on_legal_hold_cannot_be_erased(staff_client: Client) -> None:
    org = OrganizationFactory(name="Held", legal_hold=True)
    contact = ContactFactory(organization=org)

    response = staff_client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": contact.id},
        content_type="application/json",
    )
    missing = staff_client.post(
        "/api/admin/archival/erase-contact", {"contact_id": 999999}, content_type="application/json"
    )
    bad = staff_client.post(
        "/api/admin/archival/erase-contact", {}, content_type="application/json"
    )

    assert response.status_code == 409
    assert "legal hold" in response.json()["error"]
    assert Contact.objects.filter(id=contact.id).exists()
    assert missing.status_code == 404
    assert bad.status_code == 400


def test_the_erase_contact_command_prints_what_it_removed(local_storage: ArchiveStorage) -> None:
    channel = ChannelFactory()
    contact = ContactFactory(organization=channel.organization)
    old_messages(channel, 2, days=1, contact=contact)
    out = StringIO()

    call_command("erase_contact", str(contact.id), stdout=out)

    assert json.loads(out.getvalue())["messages"] == 2
    assert not Contact.objects.filter(id=contact.id).exists()


def test_setup_storage_sets_lifecycle_encryption_versioning_and_blocks_public_access(
    aws_endpoint: str, settings: Any
) -> None:
    settings.ARCHIVE_S3_BUCKET = "fresh-archive-bucket"
    settings.S3_ENDPOINT_URL = aws_endpoint
    settings.ARCHIVE_RETENTION_YEARS = 7

    call_command("setup_storage", stdout=StringIO())
    call_command("setup_storage", stdout=StringIO())  # safe to run again

    s3 = boto3.client("s3", endpoint_url=aws_endpoint, region_name=settings.AWS_REGION)
    rules = s3.get_bucket_lifecycle_configuration(Bucket="fresh-archive-bucket")["Rules"]
    assert {rule["Filter"]["Prefix"] for rule in rules} == {"archived-messages/", "archived-media/"}
    for rule in rules:
        assert rule["Status"] == "Enabled"
        assert [(t["Days"], t["StorageClass"]) for t in rule["Transitions"]] == [
            (30, "STANDARD_IA"),
            (90, "GLACIER"),
            (270, "DEEP_ARCHIVE"),
        ]
        assert rule["Expiration"]["Days"] == 7 * 365
    encryption = s3.get_bucket_encryption(Bucket="fresh-archive-bucket")
    (sse,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket="fresh-archive-bucket")[
        "PublicAccessBlockConfiguration"
    ]
    assert all(block.values())
    assert s3.get_bucket_versioning(Bucket="fresh-archive-bucket")["Status"] == "Enabled"
    assert settings.ARCHIVE_S3_BUCKET == "fresh-archive-bucket"
