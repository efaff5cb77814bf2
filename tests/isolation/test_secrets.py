"""Secrets: encrypted at rest, rotated to a new key, never in API answers or logs."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.sending import message_queue, message_send
from tests.factories import ChannelFactory, ContactFactory, OrganizationFactory
from tests.fakes import ProviderState
from tests.webhooks.conftest import META_APP_SECRET, PHONE_NUMBER_ID, WABA_ID, payload, post_meta
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process
from whatsapp_platform.models import Channel
from whatsapp_platform.services import api_key_create

pytestmark = pytest.mark.django_db

SECRETS = {
    "access_token": "EAAG-test-access-token",  # what the fake Graph API accepts
    "app_secret": META_APP_SECRET,
    "webhook_verify_token": "verify-token-5678",
    "auth_token": "twilio-auth-token-9012",
}


def raw_column(channel: Channel, column: str) -> str:
    with connection.cursor() as cursor:
        sql = f"SELECT {column} FROM whatsapp_platform_channel WHERE id = %s"  # noqa: S608
        cursor.execute(sql, [channel.id])
        return str(cursor.fetchone()[0])


def secret_channel() -> Channel:
    return ChannelFactory(
        organization=OrganizationFactory(name="Acme"),
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        display_phone_number="15550783881",
        **SECRETS,
    )


def assert_no_secret_in(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked"


# --- Key rotation ---------------------------------------------------------------------------


def test_rotation_reencrypts_every_secret_with_the_new_key_only(settings) -> None:
    old_key = settings.FIELD_ENCRYPTION_KEY.split(",")[0]
    channels = [ChannelFactory(access_token=f"token-{n}", app_secret=f"app-{n}") for n in range(5)]
    before = {c.id: raw_column(c, "access_token") for c in channels}
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = f"{new_key},{old_key}"

    out = StringIO()
    call_command("rotate_encryption_key", "--batch-size", "2", stdout=out)

    assert "whatsapp_platform.Channel: 15 re-encrypted, 0 already current" in out.getvalue()
    for n, channel in enumerate(channels):
        after = raw_column(channel, "access_token")
        assert after != before[channel.id]
        assert Fernet(new_key).decrypt(after.encode()) == f"token-{n}".encode()
        with pytest.raises(InvalidToken):
            Fernet(old_key).decrypt(after.encode())
    # With the old key gone, every secret still reads.
    settings.FIELD_ENCRYPTION_KEY = new_key
    for n, channel in enumerate(channels):
        reloaded = Channel.objects.get(id=channel.id)
        assert (reloaded.access_token, reloaded.app_secret) == (f"token-{n}", f"app-{n}")


def test_rotation_run_again_changes_nothing(settings) -> None:
    channel = ChannelFactory(access_token="only-once", auth_token="", webhook_verify_token="")
    settings.FIELD_ENCRYPTION_KEY = (
        f"{Fernet.generate_key().decode()},{settings.FIELD_ENCRYPTION_KEY}"
    )
    call_command("rotate_encryption_key", stdout=StringIO())
    rotated = raw_column(channel, "access_token")

    out = StringIO()
    call_command("rotate_encryption_key", stdout=out)

    assert "whatsapp_platform.Channel: 0 re-encrypted, 2 already current" in out.getvalue()
    assert raw_column(channel, "access_token") == rotated
    assert Channel.objects.get(id=channel.id).access_token == "only-once"


# --- API answers ----------------------------------------------------------------------------


def test_no_api_answer_holds_a_channel_secret(client: Client) -> None:
    channel = secret_channel()
    _, raw_key = api_key_create(organization=channel.organization, name="CRM")
    headers = {"Authorization": f"Bearer {raw_key}"}

    answers = [
        client.get(reverse("api-organization"), headers=headers),
        client.get("/api/schema/", headers=headers),
        client.get("/api/messages/", headers=headers),
        client.get("/api/campaigns/", headers=headers),
    ]

    organization = answers[0].json()
    assert organization["channels"][0]["id"] == channel.id
    for answer in answers:
        assert answer.status_code == 200
        assert_no_secret_in(answer.content.decode())
        assert raw_key not in answer.content.decode()


# --- Logs -----------------------------------------------------------------------------------


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records
    )


def test_a_send_logs_no_secret(caplog, provider_api: ProviderState) -> None:
    channel = secret_channel()
    contact = ContactFactory(
        organization=channel.organization, last_inbound_at=timezone.now() - timedelta(hours=1)
    )
    message, _ = message_queue(
        channel=channel, contact=contact, type="text", content={"body": "Hi"}, text="Hi"
    )

    with caplog.at_level(logging.DEBUG):
        status = message_send(message_id=message.id)

    assert status == "sent"
    assert provider_api.requests  # the Graph API was called with the token
    assert_no_secret_in(logged(caplog))


def test_a_webhook_logs_no_secret(caplog, client: Client) -> None:
    secret_channel()

    with caplog.at_level(logging.DEBUG):
        response = post_meta(client, payload("meta/text.json"))
        event = webhook_event_process(event_id=WebhookEvent.objects.get().id)

    assert response.status_code == 200
    assert event is not None
    assert event.state == WebhookEvent.State.PROCESSED
    assert_no_secret_in(logged(caplog))


def test_an_admin_save_logs_no_secret(caplog, client: Client) -> None:
    channel = secret_channel()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    url = reverse("admin:whatsapp_platform_channel_change", args=[channel.id])

    with caplog.at_level(logging.DEBUG):
        page = client.get(url)
        response = client.post(
            url,
            {
                "organization": channel.organization_id,
                "name": "Renamed",
                "provider": "meta",
                "is_active": "on",
                "messages_per_second": 40,
                "waba_id": channel.waba_id,
                "phone_number_id": channel.phone_number_id,
                "display_phone_number": channel.display_phone_number,
                "access_token": SECRETS["access_token"],
                "app_secret": "",
                "webhook_verify_token": "",
                "auth_token": "",
                "account_sid": "",
                "sender": "",
            },
        )

    assert response.status_code == 302
    assert Channel.objects.get(id=channel.id).name == "Renamed"
    assert_no_secret_in(page.content.decode())
    assert_no_secret_in(logged(caplog))
