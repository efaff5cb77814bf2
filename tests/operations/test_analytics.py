"""Client analytics events go through the analytics queue into the worker, are stored once, and
are counted in the campaign funnel (API and admin); queue status shows the caller's own work."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.models import Campaign, CampaignAudience
from conversations.models import Message
from tests.conftest import Worker, wait_for
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    MessageTemplateFactory,
    OrganizationFactory,
)
from tests.fakes import TcpProxy
from tests.operations.conftest import ApiCaller
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.models import Organization
from whatsapp_platform.monitoring.models import AnalyticsEvent
from whatsapp_platform.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)

Status = Message.Status


def _campaign(organization: Organization) -> Campaign:
    """A running campaign of four recipients: sent, delivered, read and replied, read."""
    channel = ChannelFactory(organization=organization)
    campaign = CampaignFactory(
        template=MessageTemplateFactory(channel=channel), status=Campaign.Status.RUNNING
    )
    now = timezone.now()
    statuses = [Status.SENT, Status.DELIVERED, Status.READ, Status.READ]
    for index, status in enumerate(statuses):
        contact = ContactFactory(organization=organization)
        message = MessageFactory(
            channel=channel, contact=contact, status=status, sent_at=now, type="template"
        )
        CampaignAudience.objects.create(
            campaign=campaign, contact=contact, state=CampaignAudience.State.QUEUED, message=message
        )
        if index == 3:
            MessageFactory(
                channel=channel,
                contact=contact,
                direction=Message.Direction.INBOUND,
                status=Status.RECEIVED,
                reply_to=message,
            )
    return campaign


def test_events_are_stored_by_the_worker_and_counted_in_the_campaign_funnel(
    api: ApiCaller, celery_worker: Worker
) -> None:
    campaign = _campaign(api.organization)
    event_id = f"click-{uuid.uuid4().hex[:8]}"

    response = api.post(
        "/api/messaging/analytics",
        {
            "events": [
                {"event": "button_click", "campaign_id": campaign.pk, "event_id": event_id},
                {"event": "button_click", "campaign_id": campaign.pk},
                {"event": "purchase", "campaign_id": campaign.pk, "properties": {"value": 42}},
            ]
        },
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    # The same event sent again is stored once.
    again = api.post(
        "/api/messaging/analytics",
        {"event": "button_click", "campaign_id": campaign.pk, "event_id": event_id},
    )
    assert again.status_code == 202

    wait_for(lambda: AnalyticsEvent.objects.count() == 3, timeout=60)
    funnel = api.get(f"/api/messaging/analytics/campaigns/{campaign.pk}").json()
    assert funnel == {
        "campaign": campaign.pk,
        "recipients": 4,
        "sent": 4,
        "delivered": 3,
        "read": 2,
        "replied": 1,
        "events": {"button_click": 2, "purchase": 1},
    }
    stored = AnalyticsEvent.objects.get(name="purchase")
    assert stored.properties == {"value": 42}
    assert stored.organization_id == api.organization.pk


def test_funnel_is_shown_in_the_admin(staff_client: Client, organization: Organization) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="operator").update(is_superuser=True)
    campaign = _campaign(organization)
    AnalyticsEvent.objects.create(
        organization=organization,
        event_id="e1",
        name="button_click",
        campaign=campaign,
        occurred_at=timezone.now(),
    )

    response = staff_client.get("/admin/monitoring/campaignfunnel/")

    assert response.status_code == 200
    text = response.content.decode()
    assert "sent 4 → delivered 3 → read 2 → replied 1" in text
    assert "button_click 1" in text


def test_bad_events_are_refused_with_a_clear_4xx(api: ApiCaller, client: Client) -> None:
    assert api.post("/api/messaging/analytics", {"campaign_id": 1}).status_code == 400
    bad_name = api.post("/api/messaging/analytics", {"event": "has spaces"})
    assert bad_name.status_code == 400
    assert "event" in str(bad_name.json()["errors"])
    too_many = api.post("/api/messaging/analytics", {"events": [{"event": "x"}] * 101})
    assert too_many.status_code == 400
    assert api.post("/api/messaging/analytics", {"events": "nope"}).status_code == 400
    assert client.post(
        "/api/messaging/analytics", {"event": "x"}, content_type="application/json"
    ).status_code in (401, 403)


def test_another_organizations_campaign_is_not_found(api: ApiCaller) -> None:
    other = _campaign(OrganizationFactory(name="Globex"))

    posted = api.post("/api/messaging/analytics", {"event": "click", "campaign_id": other.pk})
    funnel = api.get(f"/api/messaging/analytics/campaigns/{other.pk}")

    assert posted.status_code == 404
    assert funnel.status_code == 404
    assert AnalyticsEvent.objects.count() == 0


def test_events_are_refused_with_503_while_the_broker_is_down(
    api: ApiCaller, broker_proxy: TcpProxy, sqs_queues: dict[str, QueueSetup]
) -> None:
    with broker_proxy.down():
        response = api.post("/api/messaging/analytics", {"event": "click"})

    assert response.status_code == 503
    assert "again" in response.json()["detail"]


def test_queue_status_shows_only_the_callers_own_work(api: ApiCaller, client: Client) -> None:
    channel = ChannelFactory(organization=api.organization)
    for _ in range(2):
        MessageFactory(channel=channel, status=Status.QUEUED)
    MessageFactory(
        channel=channel, status=Status.QUEUED, next_attempt_at=timezone.now().replace(year=2100)
    )
    MessageFactory(channel=channel, status=Status.SENDING)
    other = OrganizationFactory(name="Globex")
    MessageFactory(channel=ChannelFactory(organization=other), status=Status.QUEUED)
    _, other_key = api_key_create(organization=other, name="Globex")

    body: dict[str, Any] = api.get("/api/messaging/queue/status").json()
    theirs = client.get(
        "/api/messaging/queue/status", headers={"Authorization": f"Bearer {other_key}"}
    ).json()

    assert body["outgoing"] == {"queued": 2, "scheduled": 1, "sending": 1}
    assert body["incoming"] == {"waiting": 0, "failed": 0}
    assert theirs["outgoing"] == {"queued": 1, "scheduled": 0, "sending": 0}
    assert client.get("/api/messaging/queue/status").status_code in (401, 403)
