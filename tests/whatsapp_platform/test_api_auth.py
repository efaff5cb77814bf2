"""The REST API answers organization API keys only, and `/health/` answers everyone."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from tests.factories import ChannelFactory, OrganizationFactory
from whatsapp_platform.services import api_key_create

pytestmark = pytest.mark.django_db


def test_health_answers_ok(client: Client) -> None:
    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_api_refuses_requests_without_a_key(client: Client) -> None:
    response = client.get("/api/v1/organization")

    assert response.status_code == 401


def test_api_refuses_a_wrong_key_with_a_message(client: Client) -> None:
    response = client.get("/api/v1/organization", headers={"Authorization": "Bearer wpk_wrong"})

    assert response.status_code == 401
    assert "Invalid or revoked API key" in response.json()["detail"]


def test_api_accepts_a_valid_key_and_records_its_use(client: Client) -> None:
    api_key, raw_key = api_key_create(organization=OrganizationFactory(), name="CRM")

    response = client.get("/api/v1/organization", headers={"Authorization": f"Bearer {raw_key}"})

    assert response.status_code == 200
    assert response.json()["name"] == api_key.organization.name
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_api_refuses_a_revoked_key(client: Client) -> None:
    api_key, raw_key = api_key_create(organization=OrganizationFactory(), name="CRM")
    api_key.revoked_at = timezone.now()
    api_key.save()

    response = client.get("/api/v1/organization", headers={"X-API-Key": raw_key})

    assert response.status_code == 401


def test_api_shows_only_the_key_holders_channels_and_no_secrets(client: Client) -> None:
    mine = ChannelFactory(access_token="EAAG-mine-secret")
    ChannelFactory()  # another organization's
    _, raw_key = api_key_create(organization=mine.organization, name="CRM")

    response = client.get("/api/v1/organization", headers={"Authorization": f"Bearer {raw_key}"})

    body = response.json()
    assert [channel["id"] for channel in body["channels"]] == [mine.id]
    assert "EAAG-mine-secret" not in response.content.decode()


def test_the_openapi_schema_is_public(client: Client) -> None:
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/v1/organization" in response.content
