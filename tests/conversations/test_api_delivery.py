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
from tests.factories import ChannelFactory, ContactFactory, MessageTemplateFactory
from tests.fakes import ProviderState
from whatsapp_platform.models import Channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


class Outbox:
    """What the console provider accepts from now on (its outbox file, one JSON a line)."""

    def __init__(self) -> None:
        self.path = settings.VAR_DIR / "console-outbox.jsonl"
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def records(self, message_id: int) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as outbox:
            outbox.seek(self.start)
            lines = outbox.read().decode().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [record for record in records if record["message_id"] == message_id]


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


def sent(message_id: int) -> bool:
    return Message.objects.get(id=message_id).status == Message.Status.SENT


def test_a_text_reaches_the_provider_once_whatever_the_retries(api: ApiCaller, outbox: Outbox):
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
    records = outbox.records(first.json()["id"])
    assert len(records) == 1
    assert records[0]["channel_id"] == channel.id
    assert records[0]["to"] == "4915112345678"
    assert records[0]["content"] == {"body": "Your parcel is at the door.", "preview_url": False}
    detail = api.get(f"/api/messages/{first.json()['id']}/").json()
    assert detail["status"] == "sent"
    assert [event["status"] for event in detail["history"]] == ["queued", "sent"]
    assert detail["provider_message_id"].startswith("console.")


def test_a_bulk_of_templates_reaches_the_provider(api: ApiCaller, outbox: Outbox):
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
        (record,) = outbox.records(message_id)
        assert record["type"] == "template"
        assert record["content"]["template"]["body_parameters"] == [f"#{n}"]


def meta_sends(provider_api: ProviderState, channel: Channel) -> list[dict[str, Any]]:
    """The Graph API send calls the fake provider got for this channel's number."""
    return [
        request.json()
        for request in provider_api.sends()
        if f"/{channel.phone_number_id}/messages" in request.path
    ]


def test_a_repeated_key_sends_one_graph_api_call(api: ApiCaller, provider_api: ProviderState):
    channel = ChannelFactory(organization=api.organization)
    ContactFactory(
        organization=api.organization, wa_id="4915112345678", last_inbound_at=timezone.now()
    )
    request = {
        "to": "+4915112345678",
        "type": "text",
        "text": {"body": "Your code is 4821."},
        "idempotency_key": "code-4821",
    }

    first = api.send(**request)
    wait_for(lambda: sent(first.json()["id"]))
    again = api.send(**request)

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    (payload,) = meta_sends(provider_api, channel)
    assert payload["to"] == "4915112345678"
    assert payload["text"] == {"body": "Your code is 4821.", "preview_url": False}
    assert payload["biz_opaque_callback_data"] == str(first.json()["id"])
    message = Message.objects.get(id=first.json()["id"])
    assert (message.provider_message_id or "").startswith("wamid.FAKE")


def test_a_named_template_reaches_the_graph_api_with_its_parameter_names(
    api: ApiCaller, provider_api: ProviderState
):
    channel = ChannelFactory(organization=api.organization)
    MessageTemplateFactory(
        channel=channel,
        name="welcome",
        body="Hello {{first_name}}!",
        components=[
            {"type": "BODY", "text": "Hello {{first_name}}!"},
            {
                "type": "BUTTONS",
                "buttons": [{"type": "URL", "text": "Open", "url": "https://e.com/{{1}}"}],
            },
        ],
    )

    response = api.send(
        to="+31610000042",
        type="template",
        template={
            "name": "welcome",
            "parameters": {"first_name": "Dana"},
            "buttons": [{"index": 0, "sub_type": "url", "parameter": "welcome-dana"}],
        },
    )

    wait_for(lambda: sent(response.json()["id"]))
    (payload,) = meta_sends(provider_api, channel)
    assert payload["template"] == {
        "name": "welcome",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Dana"}],
            },
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "welcome-dana"}],
            },
        ],
    }


def test_marketing_templates_sent_through_the_api_keep_to_the_frequency_cap(
    api: ApiCaller, provider_api: ProviderState
):
    channel = ChannelFactory(organization=api.organization)
    body = "Our winter sale starts today."
    MessageTemplateFactory(channel=channel, name="winter_sale", category="marketing", body=body)
    sale = {"to": "+31610000077", "type": "template", "template": {"name": "winter_sale"}}
    MessageTemplateFactory(
        channel=channel, name="winter_sale_reminder", category="marketing", body=body
    )

    first = api.send(**sale)
    wait_for(lambda: sent(first.json()["id"]))
    second = api.send(**{**sale, "template": {"name": "winter_sale_reminder"}})

    def failed() -> Message | None:
        message = Message.objects.get(id=second.json()["id"])
        return message if message.status == Message.Status.FAILED else None

    assert second.status_code == 202
    refused = wait_for(failed)
    assert isinstance(refused, Message)
    assert refused.error_code == "frequency_cap"
    assert len(meta_sends(provider_api, channel)) == 1
