"""A batch of webhook events that loses a deadlock to a concurrent transaction still applies
every event: the victim is tried again on its own once the batch has committed."""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest
from django.db import connection

from conversations.models import Contact, Message
from tests.factories import MessageFactory
from tests.webhooks.conftest import META_APP_SECRET, meta_wire, payload
from webhooks.models import WebhookEvent
from webhooks.services import dedupe_key, webhook_events_process
from webhooks.signature import meta_signature
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db(transaction=True)


def stored(body: Any) -> WebhookEvent:
    wire = meta_wire(body)
    return WebhookEvent.objects.create(
        provider=WebhookEvent.Provider.META,
        body=wire.decode(),
        kind=WebhookEvent.Kind.OTHER,
        dedupe_key=dedupe_key(WebhookEvent.Provider.META, wire),
        signature=meta_signature(wire, META_APP_SECRET),
        state=WebhookEvent.State.QUEUED,
    )


def test_a_batch_that_loses_a_deadlock_still_applies_every_event(meta_acme: Channel) -> None:
    text = payload("meta/text.json")
    wa_id = text["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"]
    contact = Contact.objects.create(organization=meta_acme.organization, wa_id=wa_id)
    message = MessageFactory(
        channel=meta_acme, contact=contact, provider_message_id="wamid.OUTBOUND0001", status="sent"
    )
    # The batch updates the message first (its status), then the contact (the inbound text).
    events = [stored(payload("meta/status_delivered.json")), stored(text)]

    # Another transaction holds the contact, and then wants the message the batch holds.
    settings_dict = connection.settings_dict
    other = psycopg2.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"],
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
    )
    holding = threading.Event()

    def lock_contact_then_message() -> None:
        with other.cursor() as cursor:
            # The batch checks for the deadlock first, so it is the one that loses it.
            cursor.execute("SET deadlock_timeout = '10s'")
            cursor.execute(
                f"UPDATE {Contact._meta.db_table} SET profile_name = 'x' WHERE id = %s",  # noqa: S608
                [contact.id],
            )
            holding.set()
            threading.Event().wait(0.3)  # the batch is waiting for the contact by now
            cursor.execute(
                f"UPDATE {Message._meta.db_table} SET error_message = '' WHERE id = %s",  # noqa: S608
                [message.id],
            )
        other.commit()

    thread = threading.Thread(target=lock_contact_then_message)
    thread.start()
    holding.wait(10)
    try:
        failed = webhook_events_process(event_ids=[e.id for e in events])
    finally:
        thread.join(30)
        other.close()

    assert failed == []
    assert all(
        e.state == WebhookEvent.State.PROCESSED
        for e in WebhookEvent.objects.filter(id__in=[e.id for e in events])
    )
    message.refresh_from_db()
    assert message.status == "delivered"
    assert Message.objects.filter(direction="in", contact=contact).count() == 1
