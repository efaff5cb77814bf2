"""Sends whose outcome was unknown, reconciled from the providers' status webhooks, or sent
again once when no status names them within the reconciliation window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from conversations.models import Message, PendingStatus
from conversations.sending import message_send, messages_sweep
from tests.conftest import wait_for
from tests.factories import ChannelFactory, ContactFactory, MessageFactory, OrganizationFactory
from tests.fakes import ProviderState, TcpProxy
from tests.webhooks.conftest import META_APP_SECRET, payload, post_meta
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_requeue_stale
from webhooks.signature import twilio_signature
from webhooks.tasks import resend_unreported_sends
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


# --- Unknown sends that no status names are sent again, once ----------------------------------


def in_window_message(channel: Channel, **fields: Any) -> Message:
    """An outbound text to a contact who wrote an hour ago, so that it may go out."""
    contact = ContactFactory(
        organization=channel.organization, last_inbound_at=timezone.now() - timedelta(hours=1)
    )
    return MessageFactory(
        channel=channel, contact=contact, type="text", content={"body": "Your parcel left."},
        **fields,
    )  # fmt: skip


def killed_before_the_call(channel: Channel) -> Message:
    """A worker marked the message handed over, then died before the provider got the call."""
    stale = timezone.now() - timedelta(seconds=settings.MESSAGE_SEND_LEASE_SECONDS + 5)
    message = in_window_message(channel, status="sending", send_started_at=stale, queued_at=stale)
    messages_sweep()
    message.refresh_from_db()
    assert message.status == "unknown"
    return message


def answer_lost(message: Message, provider: ProviderState, settings: Any) -> None:
    """The provider got the call and accepted it, but its answer came too late for us."""
    settings.PROVIDER_READ_TIMEOUT = 0.3
    provider.send_latency = 1.5
    try:
        assert message_send(message_id=message.id) == "unknown"
    finally:
        provider.send_latency = 0.0


def calls_for(provider: ProviderState, message: Message) -> int:
    """Send calls that carried this message: Meta's callback data or Twilio's callback URL."""
    ours = str(message.id)
    count = 0
    for request in provider.sends():
        if request.path.endswith("/messages"):
            count += request.json().get("biz_opaque_callback_data") == ours
        else:
            callback = parse_qs(request.body.decode()).get("StatusCallback", [""])[0]
            count += callback.endswith(f"message_id={ours}")
    return count


def webhooks_processed() -> bool:
    return not WebhookEvent.objects.exclude(
        state__in=(WebhookEvent.State.PROCESSED, WebhookEvent.State.IGNORED)
    ).exists()


def settled(message: Message, status: str) -> Message:
    wait_for(lambda: Message.objects.filter(id=message.id, status=status).exists(), timeout=60)
    message.refresh_from_db()
    return message


@pytest.fixture
def meta_reports(provider_api: ProviderState, live_server: Any) -> Iterator[ProviderState]:
    """The fake Graph API reports each message it accepts to the platform, as Meta does: a
    signed `sent` status webhook echoing biz_opaque_callback_data."""
    provider_api.status_webhook_url = f"{live_server.url}/webhooks/meta/"
    provider_api.status_webhook_secret = META_APP_SECRET
    yield provider_api
    provider_api.status_webhook_url = ""


def test_an_unknown_send_that_no_status_names_is_sent_again_once(
    meta_acme: Channel, meta_reports: ProviderState, settings: Any
) -> None:
    message = killed_before_the_call(meta_acme)

    # Within the window (a few minutes by default) a status could still come: nothing is sent.
    resend_unreported_sends()
    assert Message.objects.get(id=message.id).status == "unknown"
    assert calls_for(meta_reports, message) == 0

    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 60
    resend_unreported_sends()
    message = settled(message, "sent")
    wait_for(
        lambda: (message.provider_message_id, str(message.id)) in meta_reports.statuses_reported
    )
    wait_for(webhooks_processed)
    resend_unreported_sends()
    messages_sweep()

    message.refresh_from_db()
    assert calls_for(meta_reports, message) == 1
    # The same row, now with the id of the send the provider accepted and reported.
    assert message.status == "sent"
    assert message.resent_at is not None
    assert message.earlier_provider_message_id is None
    assert not PendingStatus.objects.exists()


def test_an_unknown_send_whose_status_arrives_is_not_sent_again(
    meta_acme: Channel, meta_reports: ProviderState, settings: Any
) -> None:
    message = in_window_message(meta_acme, status="queued")
    answer_lost(message, meta_reports, settings)

    # The provider had it: its `sent` status names our id and settles the message.
    message = settled(message, "sent")
    wait_for(webhooks_processed)
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 0
    resend_unreported_sends()
    messages_sweep()

    message.refresh_from_db()
    assert calls_for(meta_reports, message) == 1
    assert (message.provider_message_id, str(message.id)) in meta_reports.statuses_reported
    assert message.resent_at is None


def test_a_status_still_waiting_to_be_processed_holds_the_resend_back(
    client: Client, meta_acme: Channel, provider_api: ProviderState, broker_proxy: TcpProxy,
    settings: Any,
) -> None:  # fmt: skip
    message = killed_before_the_call(meta_acme)
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 60
    with broker_proxy.down():
        # The provider's status came within the window, but the broker was down: stored only.
        assert post_meta(client, meta_status("wamid.LATE1", message.id, "sent")).status_code == 200
        within = message.send_started_at + timedelta(seconds=10)  # type: ignore[operator]
        WebhookEvent.objects.update(received_at=within)

        resend_unreported_sends()

    assert Message.objects.get(id=message.id).status == "unknown"
    webhook_events_requeue_stale()
    message = settled(message, "sent")
    resend_unreported_sends()
    assert message.provider_message_id == "wamid.LATE1"
    assert calls_for(provider_api, message) == 0


def test_a_first_attempt_reported_after_the_resend_marks_the_message_sent_twice(
    client: Client, meta_acme: Channel, provider_api: ProviderState, settings: Any
) -> None:
    message = killed_before_the_call(meta_acme)
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 60
    resend_unreported_sends()
    message = settled(message, "sent")
    resent_id = message.provider_message_id

    # Against the window's promise, the provider reports the first attempt: a double.
    post_meta(client, meta_status("wamid.FIRST1", message.id, "delivered"))
    wait_for(webhooks_processed)

    message.refresh_from_db()
    assert message.earlier_provider_message_id == "wamid.FIRST1"
    assert (message.provider_message_id, message.status) == (resent_id, "sent")
    assert not PendingStatus.objects.exists()


def test_a_resent_send_left_unknown_again_is_not_sent_a_third_time(
    meta_acme: Channel, provider_api: ProviderState, settings: Any
) -> None:
    stale = timezone.now() - timedelta(hours=1)
    message = in_window_message(
        meta_acme, status="unknown", send_started_at=stale, resent_at=stale + timedelta(minutes=5)
    )
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 60

    resend_unreported_sends()
    messages_sweep(overdue_after=0)

    assert Message.objects.get(id=message.id).status == "unknown"
    assert calls_for(provider_api, message) == 0


def test_an_unknown_twilio_send_that_twilio_holds_is_recorded_and_not_sent_again(
    twilio_channel: Channel, provider_api: ProviderState, settings: Any
) -> None:
    message = in_window_message(twilio_channel, status="queued")
    answer_lost(message, provider_api, settings)
    wait_for(lambda: provider_api.twilio_messages)  # the late answer's message, created
    # Twilio keeps it queued and sends no callback for that: its Messages resource shows it.
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 0
    resend_unreported_sends()

    message.refresh_from_db()
    assert message.status == "sent"
    assert message.provider_message_id == provider_api.twilio_messages[-1]["sid"]
    assert message.resent_at is None
    assert calls_for(provider_api, message) == 1


def test_an_unknown_twilio_send_that_twilio_never_got_is_sent_again_once(
    twilio_channel: Channel, provider_api: ProviderState, settings: Any
) -> None:
    message = killed_before_the_call(twilio_channel)
    settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS = 60

    resend_unreported_sends()
    message = settled(message, "sent")
    resend_unreported_sends()
    messages_sweep()

    assert calls_for(provider_api, message) == 1
    assert message.provider_message_id == provider_api.twilio_messages[-1]["sid"]
    assert message.resent_at is not None


def test_beat_runs_the_resend_of_unreported_sends() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["resend-unreported-sends"]
    assert entry["task"] == resend_unreported_sends.name
    assert entry["schedule"] == settings.SWEEP_INTERVAL_SECONDS
