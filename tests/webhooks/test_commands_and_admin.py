"""Operator tools: `simulate_inbound` against a live server, and replay from the admin."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from conversations.models import Message
from tests.conftest import wait_for
from tests.factories import ChannelFactory
from tests.webhooks.conftest import payload, post_meta
from webhooks.models import WebhookEvent
from whatsapp_platform.models import Channel


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize("provider", ["meta", "twilio"])
def test_simulate_inbound_delivers_a_message_a_newcomer_can_watch_arrive(
    live_server, meta_acme: Channel, twilio_acme: Channel, provider: str
) -> None:
    channel = meta_acme if provider == "meta" else twilio_acme
    out = io.StringIO()

    call_command(
        "simulate_inbound", "--channel", str(channel.id), "--text", "Where is my parcel?",
        "--url", live_server.url, stdout=out,
    )  # fmt: skip

    assert "(200)" in out.getvalue()
    message = wait_for(lambda: Message.objects.filter(channel=channel).first())
    assert isinstance(message, Message)
    assert message.text == "Where is my parcel?"


@pytest.mark.django_db
def test_simulate_inbound_explains_what_it_cannot_do() -> None:
    console = ChannelFactory(provider="console", phone_number_id="", sender="whatsapp:+15550001111")

    with pytest.raises(CommandError, match="Only Meta and Twilio"):
        call_command("simulate_inbound", "--channel", str(console.id))
    with pytest.raises(CommandError, match="no channel"):
        call_command("simulate_inbound", "--channel", "999999")
    with pytest.raises(CommandError, match="--message-id"):
        call_command("simulate_inbound", "--channel", str(console.id), "--kind", "status")


@pytest.mark.django_db
@pytest.mark.usefixtures("sqs_queues")
def test_admin_replays_unroutable_events(client: Client, meta_acme: Channel, edit) -> None:
    body = edit(payload("meta/text.json"), lambda v: v["metadata"].update(phone_number_id="777"))
    post_meta(client, body)
    event = WebhookEvent.objects.get()
    WebhookEvent.objects.filter(id=event.id).update(state="unroutable")
    processed = WebhookEvent.objects.create(
        provider="meta", body="{}", dedupe_key="x", state="processed"
    )
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))

    response = client.post(
        reverse("admin:webhooks_webhookevent_changelist"),
        {"action": "replay", "_selected_action": [event.id, processed.id]},
        follow=True,
    )

    page = response.content.decode()
    assert "Replaying 1 event(s)." in page
    assert "1 event(s) were already processed or ignored." in page
    assert WebhookEvent.objects.get(id=event.id).state == "queued"
    assert WebhookEvent.objects.get(id=processed.id).state == "processed"
