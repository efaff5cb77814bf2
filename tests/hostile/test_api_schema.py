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
from django.contrib.auth.models import Permission, User
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
STAFF_PATHS = ("/monitoring/dead-letters/", "/approve/", "/reject/")


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
        staff = User.objects.create_user("approver", password=secrets.token_hex(8), is_staff=True)
        staff.user_permissions.add(Permission.objects.get(codename="approve_campaign"))
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
        rows = {"campaign_id": self.campaigns, "message_id": self.messages}.get(name)
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
