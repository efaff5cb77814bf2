"""Every API endpoint, found through the URL resolver, called with a second organization's key
against the first organization's ids: it neither sees nor changes the first one's data.

A new endpoint is walked too; one with a path parameter this module does not know fails until
the parameter is given a first-organization row here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db.models import ForeignKey, Model, Q
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from campaigns.models import AudienceImport, Campaign, CampaignAudience
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    MessageTemplateFactory,
    OrganizationFactory,
)
from whatsapp_platform.models import Organization
from whatsapp_platform.services import api_key_create
from whatsapp_platform.tenancy import TenantManager

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")
ACME_MARKERS = ("Acme", "campaign of Acme", "4915100000001")


def api_routes() -> Iterator[tuple[str, Any]]:
    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern

    for route, pattern in walk(get_resolver().url_patterns, ""):
        if route.startswith("api/"):
            yield route, pattern


ENDPOINTS = [
    (route, method)
    for route, pattern in api_routes()
    for method in METHODS
    if hasattr(getattr(pattern.callback, "view_class", None), method)
]


def tenant_models() -> list[type[Model]]:
    return [m for m in apps.get_models() if isinstance(getattr(m, "tenant", None), TenantManager)]


def _organization_path(model: Any) -> str:
    return str(getattr(model, "TENANT_ORGANIZATION_PATH", "organization"))


def fingerprint(organization: Organization) -> dict[str, list[dict[str, Any]]]:
    """Every row of the organization, and every row anywhere that points at one of its rows."""
    rows = {}
    for model in tenant_models():
        linked = Q(**{_organization_path(model): organization})
        for field in model._meta.get_fields():
            if isinstance(field, ForeignKey) and hasattr(field.related_model, "tenant"):
                related_path = _organization_path(field.related_model)
                linked |= Q(**{f"{field.name}__{related_path}": organization})
        values = model._default_manager.filter(linked).distinct().order_by("pk").values()
        rows[model._meta.label] = [dict(v) for v in values]
    rows["organization"] = [
        dict(v) for v in Organization.objects.filter(id=organization.id).values()
    ]
    return rows


@pytest.fixture
def acme() -> dict[str, Any]:
    organization = OrganizationFactory(name="Acme")
    channel = ChannelFactory(organization=organization)
    contact = ContactFactory(
        organization=organization,
        wa_id="4915100000001",
        last_inbound_at=timezone.now() - timedelta(hours=1),
    )
    message = MessageFactory(channel=channel, contact=contact)
    template = MessageTemplateFactory(channel=channel, name="order_update_acme")
    campaign = CampaignFactory(name="campaign of Acme", template=template)
    CampaignAudience.objects.create(campaign=campaign, contact=contact)
    pending = CampaignFactory(
        name="campaign of Acme", template=template, status=Campaign.Status.PENDING_APPROVAL
    )
    audience_import = AudienceImport.objects.create(
        campaign=campaign,
        file_name="customers of Acme.csv",
        file_key="audience-imports/acme.csv",
        state=AudienceImport.State.SUCCEEDED,
        report={"rows": 1, "imported": 1, "problems": [{"row": 2, "detail": "4915100000001"}]},
    )
    return {
        "organization": organization,
        "channel": channel,
        "contact": contact,
        "message": message,
        "template": template,
        "campaign": campaign,
        "pending": pending,
        "audience_import": audience_import,
    }


@pytest.fixture
def globex_client(client: Client) -> Client:
    globex = OrganizationFactory(name="Globex")
    ChannelFactory(organization=globex)
    _, raw_key = api_key_create(organization=globex, name="Globex CRM")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw_key}"
    return client


def path_for(route: str, acme: dict[str, Any]) -> str:
    """The route with the first organization's ids in its parameters."""
    values = {
        "campaign_id": acme["campaign"].id,
        "message_id": acme["message"].id,
        "contact_id": acme["contact"].id,
        "channel_id": acme["channel"].id,
        "template_id": acme["template"].id,
        "import_id": acme["audience_import"].id,
        "job": "messages",
    }
    path = route
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        name = path[start + 1 : end].split(":")[-1]
        assert name in values, f"{route}: give {name!r} a row of the first organization here"
        path = path[:start] + str(values[name]) + path[end + 1 :]
    return "/" + path


def body_for(acme: dict[str, Any]) -> dict[str, Any]:
    """A body naming the first organization's rows under every name the API uses."""
    text = {
        "to": "+" + acme["contact"].wa_id,
        "type": "text",
        "text": {"body": "from another organization"},
        "channel": acme["channel"].id,
        "reply_to": acme["message"].id,
    }
    return {
        **text,
        "messages": [text],
        "name": "hijacked",
        "template_id": acme["template"].id,
        "campaign_id": acme["campaign"].id,
        "message_id": acme["message"].id,
        "contact_id": acme["contact"].id,
        "scheduled_for": (timezone.now() + timedelta(days=1)).isoformat(),
        "reason": "hijacked",
        "events": [
            {
                "type": "click",
                "campaign_id": acme["campaign"].id,
                "message_id": acme["message"].id,
            }
        ],
    }


def test_the_walk_covers_the_api() -> None:
    routes = {route for route, _ in ENDPOINTS}

    assert "api/messaging/send/" in routes
    assert "api/messages/<int:message_id>/" in routes
    assert "api/campaigns/<int:campaign_id>/approve/" in routes
    assert "api/campaigns/<int:campaign_id>/audience/imports/<int:import_id>/" in routes
    assert "api/admin/archival/erase-contact" in routes
    assert len(ENDPOINTS) >= 25


@pytest.mark.parametrize(("route", "method"), ENDPOINTS, ids=[f"{m} {r}" for r, m in ENDPOINTS])
def test_a_second_organization_neither_sees_nor_changes_the_first(
    globex_client: Client, acme: dict[str, Any], route: str, method: str
) -> None:
    before = fingerprint(acme["organization"])
    path = path_for(route, acme)

    call = getattr(globex_client, method)
    if method == "get":
        response = call(path)
    else:
        response = call(path, json.dumps(body_for(acme)), content_type="application/json")

    assert response.status_code < 500, response.content[:500]
    if "<" in route:
        assert response.status_code in (403, 404), response.content[:500]
    if not route.startswith(("api/schema", "api/docs")):
        content = response.content.decode(errors="replace")
        for marker in ACME_MARKERS:
            assert marker not in content, f"{method} {path} shows {marker!r}"
    assert fingerprint(acme["organization"]) == before
