"""Sends through the real worker to the fake Graph API and Twilio API: rules, limits, errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.conf import settings
from django.utils import timezone

from conversations.models import Contact, Conversation, Message
from conversations.sending import message_queue, message_send, messages_sweep
from conversations.tasks import send_message
from tests.conftest import wait_for
from tests.factories import ContactFactory, MessageFactory
from tests.fakes import ProviderState, TcpProxy
from whatsapp_platform.models import Channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

TEMPLATE = {
    "template": {
        "name": "order_shipped",
        "language": "en_US",
        "body_parameters": ["7"],
        "provider_template_id": "HX" + "b" * 32,
    }
}
MARKETING = {
    "template": {
        "name": "winter_sale",
        "language": "en_US",
        "category": "marketing",
        "provider_template_id": "HX" + "a" * 32,
    }
}


def meta_error(code: int, message: str = "Error") -> dict[str, Any]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "AbCdEf",
        }
    }


def in_window(channel: Channel, **fields: Any) -> Contact:
    """A contact who wrote to the channel an hour ago: free-form messages are allowed."""
    fields.setdefault("last_inbound_at", timezone.now() - timedelta(hours=1))
    return ContactFactory(organization=channel.organization, **fields)


def queue_text(channel: Channel, contact: Contact, body: str = "Your parcel left.") -> Message:
    message, _ = message_queue(
        channel=channel, contact=contact, type="text", content={"body": body}, text=body
    )
    return message


def settled(message: Message, *statuses: str) -> Message:
    def check() -> Message | None:
        message.refresh_from_db()
        return message if message.status in statuses else None

    result = wait_for(check, timeout=60)
    assert isinstance(result, Message)
    return result


def test_a_meta_send_carries_our_id_and_records_the_provider_id(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "sent")

    [send] = provider_api.sends()
    assert send.path.endswith(f"/{meta_channel.phone_number_id}/messages")
    assert send.json()["biz_opaque_callback_data"] == str(message.id)
    assert send.json()["text"]["body"] == "Your parcel left."
    assert str(message.provider_message_id).startswith("wamid.FAKE")
    assert message.attempts == 1
    assert message.conversation is not None
    assert message.conversation.last_outbound_at is not None


def test_a_twilio_send_asks_for_status_callbacks_naming_our_id(
    twilio_channel: Channel, provider_api: ProviderState
) -> None:
    message = queue_text(twilio_channel, in_window(twilio_channel))

    settled(message, "sent")

    [send] = provider_api.sends()
    form = {k: v[0] for k, v in parse_qs(send.body.decode()).items()}
    assert form["StatusCallback"].endswith(f"/webhooks/twilio/status/?message_id={message.id}")
    assert str(message.provider_message_id).startswith("SM")


def test_a_retryable_error_backs_off_then_succeeds(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    provider_api.send_errors = [(500, meta_error(131000, "Something went wrong"))]
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "sent")

    assert len(provider_api.sends()) == 2
    assert message.attempts == 2
    assert message.error_code == ""


def test_a_retryable_error_fails_the_message_after_the_last_retry(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    attempts = settings.MESSAGE_SEND_MAX_RETRIES + 1
    provider_api.send_errors = [(503, meta_error(131016, "Service unavailable"))] * (attempts + 2)
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "failed")

    assert message.error_code == "131016"
    assert message.attempts == attempts
    assert len(provider_api.sends()) == attempts


def test_a_permanent_error_fails_the_message_with_the_providers_code(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    provider_api.send_errors = [(400, meta_error(131026, "Message undeliverable"))]
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "failed")

    assert message.error_code == "131026"
    assert len(provider_api.sends()) == 1


def test_a_credential_error_fails_the_message_and_flags_the_channel(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    Channel.objects.filter(id=meta_channel.id).update(access_token="expired-token")
    meta_channel.refresh_from_db()
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "failed")

    assert message.error_code == "190"
    meta_channel.refresh_from_db()
    assert meta_channel.credential_error
    assert meta_channel.credential_error_at is not None


def test_a_redelivered_send_never_calls_the_provider_again(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    message = queue_text(meta_channel, in_window(meta_channel))
    settled(message, "sent")

    # The same task again, as SQS redelivers it, and the service called twice more.
    send_message.delay(message.id)
    assert message_send(message_id=message.id) == "sent"
    assert message_send(message_id=message.id) == "sent"
    later = queue_text(meta_channel, in_window(meta_channel))
    settled(later, "sent")

    bodies = [s.json()["biz_opaque_callback_data"] for s in provider_api.sends()]
    assert bodies.count(str(message.id)) == 1
    message.refresh_from_db()
    assert message.attempts == 1


def test_a_send_answered_too_late_is_unknown_and_never_sent_again(
    meta_channel: Channel, provider_api: ProviderState, settings: Any
) -> None:
    contact = in_window(meta_channel)
    message = MessageFactory(
        channel=meta_channel,
        contact=contact,
        status=Message.Status.QUEUED,
        text="Hi",
        content={"body": "Hi"},
    )
    settings.PROVIDER_READ_TIMEOUT = 0.3
    provider_api.send_latency = 1.5
    try:
        # The provider got the request but its answer came too late: it may have accepted it.
        assert message_send(message_id=message.id) == "unknown"
    finally:
        provider_api.send_latency = 0.0
    assert message_send(message_id=message.id) == "unknown"
    messages_sweep()

    message.refresh_from_db()
    assert message.status == "unknown"
    assert len(provider_api.sends()) == 1


def test_nothing_is_lost_while_the_broker_is_down(
    meta_channel: Channel, provider_api: ProviderState, broker_proxy: TcpProxy
) -> None:
    contact = in_window(meta_channel)
    with broker_proxy.down():
        message = queue_text(meta_channel, contact)
        assert messages_sweep(overdue_after=0)["enqueued"] == 0
    message.refresh_from_db()
    assert message.status == "queued"
    assert provider_api.sends() == []

    assert messages_sweep(overdue_after=0)["enqueued"] == 1

    settled(message, "sent")
    assert len(provider_api.sends()) == 1


def test_a_send_claimed_by_a_dead_worker_becomes_unknown_and_is_not_resent(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    stale = timezone.now() - timedelta(seconds=settings.MESSAGE_SEND_LEASE_SECONDS + 5)
    message = MessageFactory(
        channel=meta_channel,
        contact=in_window(meta_channel),
        status="sending",
        send_started_at=stale,
        queued_at=stale,
    )

    assert messages_sweep()["unknown"] == 1
    send_message.delay(message.id)
    assert message_send(message_id=message.id) == "unknown"

    message.refresh_from_db()
    assert message.status == "unknown"
    assert provider_api.sends() == []


def test_a_send_claimed_by_a_dead_worker_before_any_provider_call_is_sent_again(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    stale = timezone.now() - timedelta(seconds=settings.MESSAGE_SEND_LEASE_SECONDS + 5)
    message = MessageFactory(
        channel=meta_channel, contact=in_window(meta_channel), status="sending", queued_at=stale
    )
    Message.objects.filter(id=message.id).update(updated_at=stale)

    messages_sweep()

    settled(message, "sent")
    assert len(provider_api.sends()) == 1


@pytest.mark.parametrize("category", ["text", "template"])
def test_the_24_hour_window_and_opt_out_are_checked_when_the_message_is_sent(
    meta_channel: Channel, provider_api: ProviderState, category: str
) -> None:
    long_ago = timezone.now() - timedelta(hours=30)
    outside = ContactFactory(organization=meta_channel.organization, last_inbound_at=long_ago)
    leaving = in_window(meta_channel)
    content = {"body": "Hi"} if category == "text" else TEMPLATE
    late = MessageFactory(
        channel=meta_channel, contact=outside, type=category, content=content, status="queued"
    )
    opted = MessageFactory(
        channel=meta_channel, contact=leaving, type=category, content=content, status="queued"
    )
    # Queued while allowed; the contact opts out before the send.
    Contact.objects.filter(id=leaving.id).update(opted_out_at=timezone.now())

    send_message.delay(late.id)
    send_message.delay(opted.id)

    settled(opted, "failed")
    assert opted.error_code == Message.ERROR_OPTED_OUT
    if category == "text":
        settled(late, "failed")
        assert late.error_code == Message.ERROR_OUTSIDE_WINDOW
        assert provider_api.sends() == []
    else:
        settled(late, "sent")  # a template may open a conversation
        assert len(provider_api.sends()) == 1
    assert {Message.ERROR_OPTED_OUT, Message.ERROR_OUTSIDE_WINDOW} <= Message.SKIP_CODES


def test_one_marketing_template_per_contact_per_day_across_campaigns(
    twilio_channel: Channel, provider_api: ProviderState
) -> None:
    contact = ContactFactory(organization=twilio_channel.organization)
    utility = ContactFactory(organization=twilio_channel.organization)
    first, _ = message_queue(
        channel=twilio_channel, contact=contact, type="template", content=MARKETING
    )
    second, _ = message_queue(
        channel=twilio_channel, contact=contact, type="template", content=MARKETING
    )
    receipt, _ = message_queue(
        channel=twilio_channel, contact=utility, type="template", content=TEMPLATE
    )
    settled(first, "sent", "failed")
    settled(second, "sent", "failed")
    settled(receipt, "sent")

    assert sorted([first.status, second.status]) == ["failed", "sent"]
    skipped = first if first.status == "failed" else second
    assert skipped.error_code == Message.ERROR_FREQUENCY_CAP
    assert len(provider_api.sends()) == 2
    contact.refresh_from_db()
    assert contact.last_marketing_at is not None


def test_metas_marketing_refusals_hold_the_contacts_marketing(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    capped = ContactFactory(organization=meta_channel.organization)
    stopped = ContactFactory(organization=meta_channel.organization)
    provider_api.send_errors = [(400, meta_error(131049, "Healthy ecosystem engagement"))]
    first, _ = message_queue(
        channel=meta_channel, contact=capped, type="template", content=MARKETING
    )
    settled(first, "failed")
    provider_api.send_errors = [(400, meta_error(131050, "User stopped marketing messages"))]
    second, _ = message_queue(
        channel=meta_channel, contact=stopped, type="template", content=MARKETING
    )
    settled(second, "failed")
    # The next marketing template to either is not even sent.
    Contact.objects.update(last_marketing_at=None)
    again, _ = message_queue(
        channel=meta_channel, contact=capped, type="template", content=MARKETING
    )
    settled(again, "failed")

    assert (first.error_code, second.error_code) == ("131049", "131050")
    assert again.error_code == Message.ERROR_MARKETING_HELD
    assert len(provider_api.sends()) == 2
    capped.refresh_from_db()
    stopped.refresh_from_db()
    assert capped.marketing_held_until is not None
    assert stopped.marketing_held_until is not None
    assert capped.opted_out_at is None
    assert stopped.opted_out_at is None
    hour = timedelta(hours=1)
    assert capped.marketing_held_until < timezone.now() + timedelta(hours=24) + hour
    assert stopped.marketing_held_until > timezone.now() + timedelta(days=365)


def test_a_second_message_to_the_same_user_waits_for_the_pair_limit_then_goes(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    contact = in_window(meta_channel)
    first = queue_text(meta_channel, contact, "One")
    second = queue_text(meta_channel, contact, "Two")

    def one_waits() -> bool:
        statuses = set(
            Message.objects.filter(id__in=(first.id, second.id)).values_list(
                "status", "next_attempt_at"
            )
        )
        return any(status == "queued" and at is not None for status, at in statuses)

    wait_for(one_waits, timeout=30)
    settled(first, "sent")
    settled(second, "sent")

    sends = provider_api.sends()
    assert len(sends) == 2
    # A lower bound the limiter guarantees, however slow the machine.
    assert sends[1].at - sends[0].at >= settings.PAIR_RATE_SECONDS - 0.5


def test_metas_pair_limit_error_retries_after_the_pair_interval(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    provider_api.send_errors = [(400, meta_error(131056, "Pair rate limit hit"))]
    message = queue_text(meta_channel, in_window(meta_channel))

    settled(message, "sent")

    sends = provider_api.sends()
    assert len(sends) == 2
    assert sends[1].at - sends[0].at >= settings.PAIR_RATE_SECONDS - 0.5


def test_a_full_messaging_tier_makes_new_conversations_wait_not_fail(
    meta_channel: Channel, provider_api: ProviderState
) -> None:
    Channel.objects.filter(id=meta_channel.id).update(messaging_tier=250)
    opened = timezone.now() - timedelta(hours=1)
    contacts = Contact.objects.bulk_create(
        Contact(organization=meta_channel.organization, wa_id=f"4470{n:07d}") for n in range(250)
    )
    Conversation.objects.bulk_create(
        Conversation(
            organization=meta_channel.organization,
            channel=meta_channel,
            contact=c,
            business_initiated_at=opened,
        )
        for c in contacts
    )
    newcomer = ContactFactory(organization=meta_channel.organization)
    talking = in_window(meta_channel)  # an open customer-service window opens nothing
    waiting, _ = message_queue(
        channel=meta_channel, contact=newcomer, type="template", content=TEMPLATE
    )
    served, _ = message_queue(
        channel=meta_channel, contact=talking, type="template", content=TEMPLATE
    )

    settled(served, "sent")
    wait_for(
        lambda: Message.objects.filter(
            id=waiting.id, status="queued", next_attempt_at__isnull=False
        ).exists()
    )
    assert len(provider_api.sends()) == 1

    # A day later the oldest conversation leaves the rolling window.
    Conversation.objects.filter(contact=contacts[0]).update(
        business_initiated_at=timezone.now() - timedelta(hours=25)
    )
    Message.objects.filter(id=waiting.id).update(next_attempt_at=timezone.now())
    messages_sweep(overdue_after=0)

    settled(waiting, "sent")
    assert len(provider_api.sends()) == 2
    conversation = Conversation.objects.get(channel=meta_channel, contact=newcomer)
    assert conversation.business_initiated_at is not None
