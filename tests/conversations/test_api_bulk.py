"""POST /api/messaging/send/bulk/: each message queued or refused on its own, answered in order."""

from __future__ import annotations

import pytest
from django.utils import timezone

from conversations.models import Contact, Message
from tests.conversations.conftest import ApiCaller
from tests.factories import ContactFactory, MessageTemplateFactory
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db

BULK = "/api/messaging/send/bulk/"


def shipped(number: str, order: str, **extra):
    return {
        "to": number,
        "type": "template",
        "template": {"name": "order_shipped", "parameters": [order]},
        **extra,
    }


def test_mixed_good_and_bad_items_are_answered_in_order(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")
    ContactFactory(organization=api.organization, wa_id="31610000077", opted_out_at=timezone.now())
    items = [
        shipped("+31 6 10000001", "#1"),
        shipped("12345", "#2"),  # invalid number
        {"to": "+31610000002", "type": "text"},  # no text
        shipped("+31610000077", "#4"),  # opted out
        {"to": "+31610000003", "type": "text", "text": {"body": "Hi"}},  # outside the window
        "not an object",
        shipped("+31610000004", "#7", priority="low"),
    ]

    response = api.post(BULK, {"messages": items})

    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [
        "queued",
        "error",
        "error",
        "error",
        "error",
        "error",
        "queued",
    ]
    assert [r["code"] for r in results] == [
        None,
        "invalid_number",
        "invalid",
        "contact_opted_out",
        "outside_service_window",
        "invalid",
        None,
    ]
    assert "text" in results[2]["errors"]
    assert (body["queued"], body["duplicates"], body["errors"]) == (2, 0, 5)
    queued = Message.objects.in_bulk([results[0]["id"], results[6]["id"]])
    assert queued[results[0]["id"]].contact.wa_id == "31610000001"
    assert queued[results[6]["id"]].priority == Message.Priority.LOW
    assert Message.objects.count() == 2


def test_more_than_1000_messages_is_a_400(api: ApiCaller, meta_channel):
    items = [shipped(f"+3161{n:07d}", "#1") for n in range(1001)]

    response = api.post(BULK, {"messages": items})

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_messages"
    assert "1,000" in response.json()["detail"]
    assert not Message.objects.exists()


def test_a_bulk_request_needs_a_list_of_messages(api: ApiCaller, meta_channel):
    bodies: list[object] = [{}, {"messages": []}, {"messages": "x"}, [1, 2]]
    for body in bodies:
        response = api.post(BULK, body)

        assert response.status_code == 400
        assert response.json()["code"] == "invalid"


def test_1000_messages_are_queued_with_new_contacts(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")
    ContactFactory(organization=api.organization, wa_id="31610000005")
    items = [shipped(f"+3161{n:07d}", f"#{n}", idempotency_key=f"o-{n}") for n in range(1000)]

    response = api.post(BULK, {"messages": items})

    assert response.status_code == 200
    assert response.json()["queued"] == 1000
    assert Message.objects.filter(status=Message.Status.QUEUED).count() == 1000
    assert Contact.objects.filter(organization=api.organization).count() == 1000


def test_repeated_keys_are_duplicates_not_new_sends(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")
    first = api.send(**shipped("+31610000001", "#1", idempotency_key="a"))
    items = [
        shipped("+31610000001", "#1", idempotency_key="a"),  # sent before
        shipped("+31610000002", "#2", idempotency_key="b"),
        shipped("+31610000002", "#2", idempotency_key="b"),  # same batch, same request
        shipped("+31610000003", "#3", idempotency_key="b"),  # same key, another request
        shipped("+31610000001", "#9", idempotency_key="a"),  # another request for the old key
    ]

    response = api.post(BULK, {"messages": items})

    results = response.json()["results"]
    assert [r["status"] for r in results] == ["duplicate", "queued", "duplicate", "error", "error"]
    assert results[0]["id"] == first.json()["id"]
    assert results[2]["id"] == results[1]["id"]
    assert results[3]["code"] == results[4]["code"] == "idempotency_key_conflict"
    assert Message.objects.count() == 2


def test_a_bulk_item_naming_another_organizations_channel_is_not_found(
    api: ApiCaller, other_api: ApiCaller, meta_channel
):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")
    theirs = Channel.objects.get(organization=other_api.organization)

    response = api.post(
        BULK,
        {
            "messages": [
                shipped("+31610000001", "#1", channel=theirs.id),
                shipped("+31610000001", "#1", channel=meta_channel.id),
            ]
        },
    )

    results = response.json()["results"]
    assert results[0]["status"] == "error"
    assert results[0]["code"] == "channel_not_found"
    assert results[1]["status"] == "queued"
    assert not Message.objects.filter(channel=theirs).exists()
