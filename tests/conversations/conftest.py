"""Fixtures of the messaging API tests: a caller with an API key, and a second organization."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from conversations.models import Contact
from tests.factories import ChannelFactory, ContactFactory, OrganizationFactory
from whatsapp_platform.models import Channel, Organization
from whatsapp_platform.services import api_key_create


@dataclass
class ApiCaller:
    """An HTTP client that speaks for one organization, through one of its API keys."""

    client: Client
    organization: Organization
    raw_key: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw_key}"}

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(
            path, body, content_type="application/json", headers=self._headers()
        )

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.client.get(path, params or {}, headers=self._headers())

    def send(self, **body: Any) -> Any:
        return self.post("/api/messaging/send/", body)


@pytest.fixture
def api(client: Client, organization: Organization) -> ApiCaller:
    _, raw_key = api_key_create(organization=organization, name="CRM")
    return ApiCaller(client, organization, raw_key)


@pytest.fixture
def other_api(client: Client) -> ApiCaller:
    """A second organization's caller, with a channel of its own."""
    other = OrganizationFactory(name="Globex")
    ChannelFactory(organization=other)
    _, raw_key = api_key_create(organization=other, name="Globex CRM")
    return ApiCaller(client, other, raw_key)


def console_channel_for(organization: Organization) -> Channel:
    return ChannelFactory(
        organization=organization,
        provider=Channel.Provider.CONSOLE,
        waba_id="",
        phone_number_id="",
        display_phone_number="",
        access_token="",
        app_secret="",
        webhook_verify_token="",
        sender=f"whatsapp:+1999{organization.id:07d}",
    )


@pytest.fixture
def chatting_contact(organization: Organization) -> Contact:
    """A contact who wrote an hour ago: the 24-hour window is open."""
    return ContactFactory(
        organization=organization,
        wa_id="4915112345678",
        last_inbound_at=timezone.now() - timedelta(hours=1),
    )
