"""A message queued through the API reaches the provider through the real worker, once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from conversations.models import Message
from tests.conftest import wait_for
from tests.conversations.conftest import ApiCaller, console_channel_for
from tests.factories import ContactFactory, MessageTemplateFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def outbox_records(message_id: int) -> list[dict[str, Any]]:
    """What the console provider accepted for this message (its outbox, one JSON a line)."""
    path = settings.VAR_DIR / "console-outbox.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if record["message_id"] == message_id]


def sent(message_id: int) -> bool:
    return Message.objects.get(id=message_id).status == Message.Status.SENT


def test_a_text_reaches_the_provider_once_whatever_the_retries(api: ApiCaller):
    channel = console_channel_for(api.organization)
    ContactFactory(
        organization=api.organization,
        wa_id="4915112345678",
        last_inbound_at=timezone.now() - timedelta(minutes=5),
    )
    request = {
        "to": "+49 151 12345678",
        "type": "text",
        "text": {"body": "Your parcel is at the door."},
        "idempotency_key": "door-1",
    }

    first = api.send(**request)
    wait_for(lambda: sent(first.json()["id"]))
    again = api.send(**request)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    records = outbox_records(first.json()["id"])
    assert len(records) == 1
    assert records[0]["channel_id"] == channel.id
    assert records[0]["to"] == "4915112345678"
    assert records[0]["content"] == {"body": "Your parcel is at the door.", "preview_url": False}
    detail = api.get(f"/api/messages/{first.json()['id']}/").json()
    assert detail["status"] == "sent"
    assert [event["status"] for event in detail["history"]] == ["queued", "sent"]
    assert detail["provider_message_id"].startswith("console.")


def test_a_bulk_of_templates_reaches_the_provider(api: ApiCaller):
    channel = console_channel_for(api.organization)
    MessageTemplateFactory(channel=channel, name="order_shipped")
    items = [
        {
            "to": f"+3161000{n:04d}",
            "type": "template",
            "template": {"name": "order_shipped", "parameters": [f"#{n}"]},
        }
        for n in range(5)
    ]

    response = api.post("/api/messaging/send/bulk/", {"messages": items})

    ids = [result["id"] for result in response.json()["results"]]
    wait_for(lambda: all(sent(message_id) for message_id in ids))
    for n, message_id in enumerate(ids):
        (record,) = outbox_records(message_id)
        assert record["type"] == "template"
        assert record["content"]["template"]["body_parameters"] == [f"#{n}"]
