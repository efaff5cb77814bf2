"""The Django admin: every model's pages load, secrets stay write-only, API keys show once."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    OrganizationFactory,
)
from whatsapp_platform.models import ApiKey, Channel
from whatsapp_platform.services import api_key_authenticate

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "whatsapp_platform_organization",
    "whatsapp_platform_channel",
    "whatsapp_platform_apikey",
    "conversations_contact",
    "conversations_conversation",
    "conversations_message",
    "conversations_mediaasset",
    "campaigns_messagetemplate",
    "campaigns_campaign",
    "webhooks_webhookevent",
    "archival_archiverun",
    "django_celery_beat_periodictask",
]


@pytest.fixture
def superuser_client(client: Client) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.mark.parametrize("name", CHANGELISTS)
def test_every_admin_list_loads(superuser_client: Client, name: str) -> None:
    MessageFactory()
    CampaignFactory()

    response = superuser_client.get(reverse(f"admin:{name}_changelist"))

    assert response.status_code == 200


def test_admin_refuses_anonymous_users(client: Client) -> None:
    response = client.get(reverse("admin:whatsapp_platform_channel_changelist"))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_channel_form_never_shows_secrets_and_keeps_them_when_left_blank(
    superuser_client: Client,
) -> None:
    channel = ChannelFactory(access_token="EAAG-hidden", app_secret="hidden-secret")
    url = reverse("admin:whatsapp_platform_channel_change", args=[channel.id])

    page = superuser_client.get(url).content.decode()
    response = superuser_client.post(
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
            "access_token": "",
            "app_secret": "",
            "webhook_verify_token": "new-verify-token",
            "auth_token": "",
            "account_sid": "",
            "sender": "",
        },
    )

    assert "EAAG-hidden" not in page
    assert "hidden-secret" not in page
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = Channel.objects.get(id=channel.id)
    assert saved.name == "Renamed"
    assert saved.messages_per_second == 40
    assert saved.access_token == "EAAG-hidden"
    assert saved.app_secret == "hidden-secret"
    assert saved.webhook_verify_token == "new-verify-token"


def test_a_new_api_key_is_shown_once_and_stored_hashed(superuser_client: Client) -> None:
    organization = OrganizationFactory()

    response = superuser_client.post(
        reverse("admin:whatsapp_platform_apikey_add"),
        {"organization": organization.id, "name": "CRM"},
        follow=True,
    )

    shown = re.search(r"wpk_[A-Za-z0-9_-]{20,}", response.content.decode())
    assert shown
    api_key = ApiKey.objects.get()
    assert api_key.key_hash != shown.group(0)
    assert shown.group(0) not in api_key.key_hash
    assert api_key_authenticate(raw_key=shown.group(0)) == api_key
    again = superuser_client.get(
        reverse("admin:whatsapp_platform_apikey_change", args=[api_key.id])
    )
    assert shown.group(0) not in again.content.decode()


def test_contact_search_finds_by_phone_number(superuser_client: Client) -> None:
    ContactFactory(wa_id="31612345678", profile_name="Ada")
    ContactFactory(wa_id="31699999999", profile_name="Bob")

    response = superuser_client.get(
        reverse("admin:conversations_contact_changelist"), {"q": "3161234"}
    )

    assert "Ada" in response.content.decode()
    assert "Bob" not in response.content.decode()
