"""Every API operation of /api/schema/, fuzzed by schemathesis against the WSGI app in-process.

An organization with data (channels, templates, contacts, campaigns, messages) calls with its
API key; the staff operations are called by a staff approver's session. Each answer must be no
5xx and must match the schema: a documented status code, content type and body.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS

from campaigns.models import Campaign
from conversations.models import Message
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    MessageTemplateFactory,
    TwilioChannelFactory,
)
from whatsapp_platform.models import Organization
from whatsapp_platform.services import api_key_create

app = get_wsgi_application()
schema = schemathesis.openapi.from_wsgi("/api/schema/", app)

# What a client relies on: no server error, and an answer the schema documents.
SCHEMA_CHECKS = CHECKS.get_by_names(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
# Operations a staff user calls (a session), not an API key.
STAFF_PATHS = ("/monitoring/dead-letters/", "/api/admin/", "/approve/", "/reject/")


class Tenant:
    def __init__(self) -> None:
        self.organization = Organization.objects.create(name="Fuzz", slug="fuzz")
        meta = ChannelFactory(organization=self.organization)
        TwilioChannelFactory(organization=self.organization)
        template = MessageTemplateFactory(channel=meta, name="order_update", language="en_US")
        self.campaigns = [
            CampaignFactory(template=template),
            CampaignFactory(template=template, status=Campaign.Status.PENDING_APPROVAL),
        ]
        contact = ContactFactory(organization=self.organization, wa_id="4915112345678")
        self.messages = [
            MessageFactory(channel=meta, contact=contact),
            MessageFactory(
                channel=meta,
                contact=contact,
                direction=Message.Direction.INBOUND,
                status=Message.Status.RECEIVED,
            ),
        ]
        _, self.raw_key = api_key_create(organization=self.organization, name="fuzz")
        # A superuser: the staff endpoints answer nobody else in full.
        staff = User.objects.create_superuser("operator", password=secrets.token_hex(8))
        client = Client()
        client.force_login(staff)
        self.session = client.cookies["sessionid"].value
        self.csrf = secrets.token_hex(16)

    def request_options(self, path: str) -> dict[str, Any]:
        if any(part in path for part in STAFF_PATHS):
            return {
                "cookies": {"sessionid": self.session, "csrftoken": self.csrf},
                "headers": {"X-CSRFToken": self.csrf},
            }
        return {"headers": {"Authorization": f"Bearer {self.raw_key}"}}

    def existing(self, name: str, value: Any) -> Any:
        """Half of the generated ids name the tenant's own rows, so found paths are fuzzed too."""
        rows: list[Any] | None = {"campaign_id": self.campaigns, "message_id": self.messages}.get(
            name
        )
        if rows is None or not isinstance(value, int) or value % 2:
            return value
        return rows[value % len(rows)].id


@pytest.fixture
def tenant(db: None, sqs_queues: Any) -> Iterator[Tenant]:
    # The WSGI handler closes the connection after each request, as in production; the test's
    # transaction needs it open (Django's test client does the same).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield Tenant()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_schema(case: Any, tenant: Tenant) -> None:
    for name, value in list((case.path_parameters or {}).items()):
        case.path_parameters[name] = tenant.existing(name, value)
    case.call_and_validate(checks=SCHEMA_CHECKS, **tenant.request_options(case.path))


# --- Defects the fuzzing found, one example each ---------------------------------------------


@pytest.fixture
def api(db: None) -> tuple[Client, dict[str, str], Tenant]:
    tenant = Tenant()
    return Client(), {"Authorization": f"Bearer {tenant.raw_key}"}, tenant


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/campaigns/null,null/"),
        ("get", "/api/messages/-1/"),
        ("post", "/api/campaigns/abc/launch/"),
        ("post", "/api/messaging/send"),  # no trailing slash
        ("delete", "/api/nothing-here/"),
    ],
)
def test_an_unknown_api_path_gets_a_json_404(api, method, path) -> None:
    client, key, _ = api

    response = getattr(client, method)(path, {}, content_type="application/json", headers=key)

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "No such endpoint.", "errors": {}}


def test_a_cursor_we_did_not_hand_out_gets_a_400(api) -> None:
    client, key, _ = api

    response = client.get("/api/messages/", {"cursor": "¿not-a-cursor"}, headers=key)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "cursor" in response.json()["errors"]


def test_a_body_that_is_not_json_gets_the_messaging_error_shape(api) -> None:
    client, key, _ = api

    broken = client.post(
        "/api/messaging/send/", b"\x9e{", content_type="application/json", headers=key
    )
    as_text = client.post(
        "/api/messaging/send/bulk/", b"hello", content_type="text/plain", headers=key
    )

    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed"
    assert broken.json()["errors"]["non_field_errors"]
    assert as_text.status_code == 415
    assert as_text.json()["code"] == "unsupported_media_type"


def test_campaign_validation_errors_have_a_detail_and_the_fields(api) -> None:
    client, key, _ = api

    response = client.post("/api/campaigns/", {}, content_type="application/json", headers=key)

    assert response.status_code == 400
    assert response.json()["detail"] == "The request is not valid: see errors."
    assert set(response.json()["errors"]) == {"name", "template_id"}


def test_the_schema_documents_every_refusal_it_gives(api) -> None:
    client, _, _ = api

    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]

    assert {"401"} <= set(paths["/api/v1/organization"]["get"]["responses"])
    assert {"401"} <= set(paths["/api/messaging/queue/status"]["get"]["responses"])
    assert {"400", "401", "404"} <= set(paths["/api/messaging/analytics"]["post"]["responses"])
    assert {"400", "401", "403", "503"} <= set(
        paths["/monitoring/dead-letters/purge/"]["post"]["responses"]
    )
    assert "415" in paths["/api/messaging/send/"]["post"]["responses"]
