"""Sends whose outcome was unknown, reconciled from the providers' status webhooks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from conversations.sending import messages_sweep
from tests.conftest import wait_for
from tests.factories import ChannelFactory, MessageFactory, OrganizationFactory
from tests.webhooks.conftest import payload, post_meta
from webhooks.signature import twilio_signature
from whatsapp_platform.models import Channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def lost_send(channel: Channel) -> Message:
    """A message whose worker died between the provider call and recording its answer."""
    stale = timezone.now() - timedelta(seconds=settings.MESSAGE_SEND_LEASE_SECONDS + 5)
    message = MessageFactory(channel=channel, status="sending", send_started_at=stale)
    messages_sweep()
    message.refresh_from_db()
    assert message.status == "unknown"
    return message


def meta_status(provider_message_id: str, our_id: Any, status: str = "delivered") -> Any:
    body = payload("meta/status_delivered.json")
    item = body["entry"][0]["changes"][0]["value"]["statuses"][0]
    item.update(id=provider_message_id, status=status, biz_opaque_callback_data=str(our_id))
    return body


def test_a_meta_status_naming_our_id_reconciles_an_unknown_send(
    client: Client, meta_acme: Channel
) -> None:
    message = lost_send(meta_acme)

    assert post_meta(client, meta_status("wamid.LOST1", message.id)).status_code == 200

    wait_for(lambda: Message.objects.filter(id=message.id, status="delivered").exists())
    message.refresh_from_db()
    assert message.provider_message_id == "wamid.LOST1"
    assert message.delivered_at is not None


def test_a_status_never_reconciles_another_organizations_message(
    client: Client, meta_acme: Channel
) -> None:
    theirs = lost_send(ChannelFactory(organization=OrganizationFactory(name="Globex")))
    mine = lost_send(meta_acme)

    post_meta(client, meta_status("wamid.FORGED", theirs.id))
    post_meta(client, meta_status("wamid.MINE", mine.id, status="read"))

    wait_for(lambda: Message.objects.filter(id=mine.id, status="read").exists())
    theirs.refresh_from_db()
    assert (theirs.status, theirs.provider_message_id) == ("unknown", None)


def test_a_twilio_status_callback_naming_our_id_reconciles_an_unknown_send(
    client: Client, twilio_acme: Channel
) -> None:
    message = lost_send(twilio_acme)
    params = {
        **payload("twilio/status_delivered.json"),
        "MessageSid": "SMLOST1",
        "SmsSid": "SMLOST1",
    }
    path = f"/webhooks/twilio/status/?message_id={message.id}"
    signature = twilio_signature(settings.PUBLIC_BASE_URL + path, params, twilio_acme.auth_token)

    response = client.post(
        path,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )

    assert response.status_code == 200
    wait_for(lambda: Message.objects.filter(id=message.id, status="delivered").exists())
    message.refresh_from_db()
    assert message.provider_message_id == "SMLOST1"
