"""GET /api/messages/ and /api/messages/{id}/: a message, its status history, and the list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import CampaignAudience
from conversations.models import Message
from tests.conversations.conftest import ApiCaller
from tests.factories import CampaignFactory, ContactFactory, MessageFactory
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db


def test_a_message_shows_its_status_history(api: ApiCaller, meta_channel):
    start = timezone.now() - timedelta(minutes=10)
    message = MessageFactory(
        channel=meta_channel,
        type=Message.Type.TEXT,
        content={"body": "Hello", "preview_url": False},
        status=Message.Status.READ,
        priority=Message.Priority.HIGH,
        provider_message_id="wamid.A1",
        queued_at=start,
        sent_at=start + timedelta(seconds=1),
        delivered_at=start + timedelta(seconds=5),
        read_at=start + timedelta(minutes=2),
    )

    response = api.get(f"/api/messages/{message.id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["direction"] == "outbound"
    assert body["to"] == message.contact.wa_id
    assert body["type"] == "text"
    assert body["content"] == {"body": "Hello", "preview_url": False}
    assert body["status"] == "read"
    assert body["priority"] == "high"
    assert body["error"] is None
    assert body["campaign"] is None
    assert [event["status"] for event in body["history"]] == [
        "queued",
        "sent",
        "delivered",
        "read",
    ]
    assert body["history"][0]["at"] == body["queued_at"]


def test_a_failed_message_shows_its_error(api: ApiCaller, meta_channel):
    now = timezone.now()
    message = MessageFactory(
        channel=meta_channel,
        status=Message.Status.FAILED,
        queued_at=now - timedelta(seconds=3),
        failed_at=now,
        error_code="131047",
        error_message="Re-engagement message",
    )

    body = api.get(f"/api/messages/{message.id}/").json()

    assert body["error"] == {"code": "131047", "message": "Re-engagement message"}
    assert [event["status"] for event in body["history"]] == ["queued", "failed"]


def test_a_campaign_message_names_its_campaign(api: ApiCaller, meta_channel):
    campaign = CampaignFactory(template__channel=meta_channel)
    message = MessageFactory(channel=meta_channel, type=Message.Type.TEMPLATE)
    CampaignAudience.objects.create(campaign=campaign, contact=message.contact, message=message)

    body = api.get(f"/api/messages/{message.id}/").json()

    assert body["campaign"] == campaign.id


def test_an_inbound_message_was_received(api: ApiCaller, meta_channel):
    message = MessageFactory(
        channel=meta_channel, direction=Message.Direction.INBOUND, status=Message.Status.RECEIVED
    )

    body = api.get(f"/api/messages/{message.id}/").json()

    assert body["direction"] == "inbound"
    assert body["to"] == meta_channel.address
    assert [event["status"] for event in body["history"]] == ["received"]


def test_another_organizations_message_is_not_found(
    api: ApiCaller, other_api: ApiCaller, meta_channel
):
    mine = MessageFactory(channel=meta_channel, text="Private text")

    response = other_api.get(f"/api/messages/{mine.id}/")

    assert response.status_code == 404
    assert response.json()["code"] == "message_not_found"
    assert "Private text" not in response.content.decode()


def test_the_list_shows_only_the_organizations_messages_newest_first(
    api: ApiCaller, other_api: ApiCaller, meta_channel
):
    older = MessageFactory(channel=meta_channel)
    newer = MessageFactory(channel=meta_channel)
    theirs = MessageFactory(channel=Channel.objects.get(organization=other_api.organization))

    mine = api.get("/api/messages/").json()["results"]
    their_list = other_api.get("/api/messages/").json()["results"]

    assert [m["id"] for m in mine] == [newer.id, older.id]
    assert [m["id"] for m in their_list] == [theirs.id]


def test_the_list_filters_by_status_direction_contact_and_time(api: ApiCaller, meta_channel):
    dana = ContactFactory(organization=api.organization, wa_id="4915112345678")
    sent = MessageFactory(channel=meta_channel, contact=dana, status=Message.Status.SENT)
    failed = MessageFactory(channel=meta_channel, status=Message.Status.FAILED)
    inbound = MessageFactory(
        channel=meta_channel,
        contact=dana,
        direction=Message.Direction.INBOUND,
        status=Message.Status.RECEIVED,
    )
    old = MessageFactory(channel=meta_channel, status=Message.Status.SENT)
    Message.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=10))
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()

    def ids(**params):
        response = api.get("/api/messages/", params)
        assert response.status_code == 200
        return {m["id"] for m in response.json()["results"]}

    assert ids(status="failed") == {failed.id}
    assert ids(direction="inbound") == {inbound.id}
    assert ids(contact="+49 151 12345678") == {sent.id, inbound.id}
    assert ids(created_after=week_ago, status="sent") == {sent.id}
    assert ids(created_before=week_ago) == {old.id}


def test_bad_list_filters_are_a_400(api: ApiCaller, meta_channel):
    for params in ({"status": "lost"}, {"contact": "123"}, {"created_after": "yesterday"}):
        response = api.get("/api/messages/", params)

        assert response.status_code == 400
        assert response.json()["code"] == "invalid"
        assert set(response.json()["errors"]) == set(params)


def test_the_list_pages_with_a_cursor(api: ApiCaller, meta_channel):
    messages = [MessageFactory(channel=meta_channel) for _ in range(5)]

    first = api.get("/api/messages/", {"page_size": 2}).json()
    seen = [m["id"] for m in first["results"]]
    page = first
    while page["next"]:
        page = api.client.get(
            page["next"], headers={"Authorization": f"Bearer {api.raw_key}"}
        ).json()
        seen += [m["id"] for m in page["results"]]

    assert len(first["results"]) == 2
    assert seen == [m.id for m in reversed(messages)]
