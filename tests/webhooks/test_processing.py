"""Signed deliveries go through the real view, the real SQS queue and a real worker into rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from campaigns.models import Campaign, MessageTemplate
from conversations.models import Contact, Conversation, MediaAsset, Message
from conversations.services import message_provider_id_record
from tests.conftest import wait_for
from tests.factories import CampaignFactory, ChannelFactory, MessageFactory, MessageTemplateFactory
from tests.fakes import ProviderState, TcpProxy
from tests.webhooks.conftest import (
    META_APP_SECRET,
    SECOND_PHONE_NUMBER_ID,
    TWILIO_ACCOUNT_SID,
    TWILIO_AUTH_TOKEN,
    WABA_ID,
    payload,
    post_meta,
    post_twilio,
)
from webhooks.dispatch import dispatcher
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_replay, webhook_events_requeue_stale
from whatsapp_platform.lib.sqs import QueueSetup, TaskMessage, decode_task_message, sqs_client
from whatsapp_platform.lib.storage import archive_storage
from whatsapp_platform.models import Channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

DONE = ("processed", "failed", "unroutable", "ignored")


def settled(count: int = 1) -> list[WebhookEvent]:
    """Wait until the worker has finished with `count` events."""
    return wait_for(  # type: ignore[return-value]
        lambda: (
            (events := list(WebhookEvent.objects.order_by("id")))
            and len(events) >= count
            and all(e.state in DONE for e in events)
            and events
        )
    )


def deliver_meta(client: Client, body: Any, count: int = 1) -> list[WebhookEvent]:
    assert post_meta(client, body).status_code == 200
    return settled(count)


def inbound(name: str) -> Message:
    return Message.objects.get(
        direction="in",
        content__id=payload(name)["entry"][0]["changes"][0]["value"]["messages"][0]["id"],
    )


def outbound(channel: Channel, wamid: str, **fields: Any) -> Message:
    return MessageFactory(
        channel=channel, provider_message_id=wamid, **{"status": "sent", **fields}
    )


# --- Inbound messages -----------------------------------------------------------------------


def test_a_text_message_creates_the_contact_conversation_and_message(
    client: Client, meta_acme: Channel
) -> None:
    [event] = deliver_meta(client, payload("meta/text.json"))

    assert event.state == "processed"
    message = Message.objects.get()
    assert message.direction == "in"
    assert message.type == "text"
    assert (
        message.text
        == payload("meta/text.json")["entry"][0]["changes"][0]["value"]["messages"][0]["text"][
            "body"
        ]
    )
    assert message.organization == meta_acme.organization
    contact = Contact.objects.get()
    assert (contact.wa_id, contact.profile_name) == ("16315551181", "Kerry Fisher")
    assert contact.last_inbound_at is not None
    assert Conversation.objects.get().contact == contact
    assert message.conversation_id == Conversation.objects.get().id


@pytest.mark.parametrize(
    ("name", "kind", "text"),
    [
        ("location.json", "location", None),
        ("contacts.json", "contacts", None),
        ("reaction.json", "reaction", "👍"),
        ("interactive_button_reply.json", "interactive", None),
        ("interactive_list_reply.json", "interactive", None),
        ("button.json", "button", None),
        ("unsupported.json", "unsupported", None),
        ("system.json", "system", None),
    ],
)
def test_every_message_type_is_stored_with_its_full_content(
    client: Client, meta_acme: Channel, name: str, kind: str, text: str | None
) -> None:
    body = payload(f"meta/{name}")
    original = body["entry"][0]["changes"][0]["value"]["messages"][0]

    deliver_meta(client, body)

    message = Message.objects.get()
    assert message.type == kind
    assert message.content == original
    if text is not None:
        assert message.text == text
    if kind == "unsupported":
        assert message.error_code == "131051"
    if kind == "interactive":
        reply = original["interactive"][original["interactive"]["type"]]
        assert message.text == reply["title"]


@pytest.mark.parametrize(
    "name", ["image.json", "audio.json", "video.json", "document.json", "sticker.json"]
)
def test_media_is_downloaded_from_meta_into_archive_storage(
    client: Client, meta_acme: Channel, provider_api: ProviderState, name: str
) -> None:
    body = payload(f"meta/{name}")
    message_json = body["entry"][0]["changes"][0]["value"]["messages"][0]
    media = message_json[message_json["type"]]
    data = f"bytes of {name}".encode() * 1000
    provider_api.media[media["id"]] = (data, media["mime_type"])

    deliver_meta(client, body)

    asset = wait_for(lambda: MediaAsset.objects.exclude(state="pending").first())
    assert isinstance(asset, MediaAsset)
    assert (asset.state, asset.error) == ("stored", "")
    assert asset.message.type == message_json["type"]
    assert asset.size == len(data)
    assert asset.storage_key.startswith(f"media/org={meta_acme.organization_id}/")
    with archive_storage().open(asset.storage_key) as stored:
        assert stored.read() == data


def test_a_reply_is_linked_to_our_message(client: Client, meta_acme: Channel) -> None:
    ours = outbound(meta_acme, "wamid.OUTBOUND0001")

    deliver_meta(client, payload("meta/text_reply.json"))

    assert Message.objects.get(direction="in").reply_to == ours


def test_a_user_known_only_by_business_scoped_id_is_still_a_contact(
    client: Client, meta_acme: Channel
) -> None:
    deliver_meta(client, payload("meta/text_bsuid_only.json"))

    contact = Contact.objects.get()
    assert contact.wa_id is None
    assert contact.user_id == "US.13491208655302741918"
    assert contact.username == "kerry.f"
    assert Message.objects.get().contact == contact


def test_the_same_message_in_another_delivery_is_stored_once(
    client: Client, meta_acme: Channel
) -> None:
    body = payload("meta/text.json")
    reshaped = {**body, "extra": "a different body, the same message"}

    deliver_meta(client, body)
    deliver_meta(client, reshaped, count=2)

    assert Message.objects.count() == 1


# --- Statuses -------------------------------------------------------------------------------


def test_statuses_move_a_message_forward_with_each_time(client: Client, meta_acme: Channel) -> None:
    message = outbound(meta_acme, "wamid.OUTBOUND0001", status="queued")

    for count, name in enumerate(("status_sent", "status_delivered", "status_read"), start=1):
        deliver_meta(client, payload(f"meta/{name}.json"), count=count)

    message.refresh_from_db()
    assert message.status == "read"
    assert message.sent_at
    assert message.delivered_at
    assert message.read_at
    assert message.billing["pricing"]["pricing_model"] == "PMP"


def test_read_before_delivered_stays_read_and_still_records_the_delivered_time(
    client: Client, meta_acme: Channel
) -> None:
    message = outbound(meta_acme, "wamid.OUTBOUND0001")

    deliver_meta(client, payload("meta/status_read.json"))
    deliver_meta(client, payload("meta/status_delivered.json"), count=2)

    message.refresh_from_db()
    assert message.status == "read"
    assert message.delivered_at is not None


def test_failed_keeps_its_error_and_only_delivered_or_read_override_it(
    client: Client, meta_acme: Channel
) -> None:
    message = outbound(meta_acme, "wamid.OUTBOUND0001")

    deliver_meta(client, payload("meta/status_failed.json"))
    deliver_meta(client, payload("meta/status_sent.json"), count=2)
    message.refresh_from_db()
    assert message.status == "failed"
    assert message.error_code == "131026"
    assert "undeliverable" in message.error_message.lower()

    deliver_meta(client, payload("meta/status_read.json"), count=3)
    message.refresh_from_db()
    assert message.status == "read"


def test_a_status_that_arrives_before_our_send_returned_is_applied_when_it_does(
    client: Client, meta_acme: Channel
) -> None:
    message = MessageFactory(channel=meta_acme, status="sending")

    deliver_meta(client, payload("meta/status_delivered.json"))
    message_provider_id_record(message_id=message.id, provider_message_id="wamid.OUTBOUND0001")

    message.refresh_from_db()
    assert message.status == "delivered"
    assert message.delivered_at is not None


def test_a_batch_applies_every_item_across_entries_and_numbers(
    client: Client, meta_acme: Channel
) -> None:
    second = ChannelFactory(
        organization=meta_acme.organization,
        phone_number_id=SECOND_PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        app_secret=META_APP_SECRET,
    )
    delivered = outbound(meta_acme, "wamid.OUTBOUND0002")
    read = outbound(meta_acme, "wamid.OUTBOUND0003")
    sent = outbound(second, "wamid.OUTBOUND0004", status="queued")

    [event] = deliver_meta(client, payload("meta/batch.json"))

    assert event.state == "processed"
    assert Message.objects.filter(direction="in").count() == 3
    assert Contact.objects.count() == 3 + 3  # three senders, three recipients
    for message, status in ((delivered, "delivered"), (read, "read"), (sent, "sent")):
        message.refresh_from_db()
        assert message.status == status


def test_one_bad_item_fails_alone_and_the_event_says_why(
    client: Client, meta_acme: Channel
) -> None:
    body = payload("meta/batch.json")
    messages = body["entry"][0]["changes"][0]["value"]["messages"]
    del messages[1]["from"]  # neither a phone number nor a business-scoped id

    assert post_meta(client, body).status_code == 200

    event = wait_for(lambda: WebhookEvent.objects.filter(state="failed").first())
    assert isinstance(event, WebhookEvent)
    assert "item 1" in event.last_error
    assert Message.objects.filter(direction="in").count() == 2
    # Its retries apply nothing twice (and leave no work behind for the next test).
    wait_for(lambda: WebhookEvent.objects.filter(id=event.id, attempts=3).exists(), 60)
    assert Message.objects.filter(direction="in").count() == 2


def test_an_unroutable_delivery_is_kept_and_replayed_once_its_channel_exists(
    client: Client, meta_acme: Channel
) -> None:
    body = payload("meta/batch.json")
    [event] = deliver_meta(client, body)
    assert event.state == "unroutable"  # the second number has no channel yet
    assert Message.objects.filter(direction="in").count() == 3

    second = ChannelFactory(
        organization=meta_acme.organization,
        phone_number_id=SECOND_PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        app_secret=META_APP_SECRET,
    )
    sent = outbound(second, "wamid.OUTBOUND0004", status="queued")
    assert webhook_events_replay(event_ids=[event.id]) == 1

    wait_for(lambda: WebhookEvent.objects.get(id=event.id).state == "processed")
    sent.refresh_from_db()
    assert sent.status == "sent"
    assert Message.objects.filter(direction="in").count() == 3


# --- Other Meta fields ----------------------------------------------------------------------


def test_a_template_status_update_pauses_the_campaigns_that_use_it(
    client: Client, meta_acme: Channel
) -> None:
    template = MessageTemplateFactory(channel=meta_acme, name="order_update", language="en_US")
    campaign = CampaignFactory(template=template, status=Campaign.Status.RUNNING)

    deliver_meta(client, payload("meta/template_status_paused.json"))

    template.refresh_from_db()
    campaign.refresh_from_db()
    assert template.status == MessageTemplate.Status.PAUSED
    assert campaign.status == Campaign.Status.PAUSED
    assert "order_update" in campaign.status_reason


def test_marketing_stop_preference_opts_the_contact_out(client: Client, meta_acme: Channel) -> None:
    deliver_meta(client, payload("meta/user_preferences_stop.json"))

    assert Contact.objects.get(wa_id="16315551181").opted_out_at is not None


def test_stop_and_start_keywords_opt_out_and_back_in(
    client: Client, meta_acme: Channel, edit
) -> None:
    stop = edit(payload("meta/text.json"), lambda v: v["messages"][0]["text"].update(body=" stop "))
    start = edit(
        payload("meta/text_with_bsuid.json"),
        lambda v: v["messages"][0]["text"].update(body="START"),
    )

    deliver_meta(client, stop)
    assert Contact.objects.get().opted_out_at is not None
    deliver_meta(client, start, count=2)
    assert Contact.objects.get().opted_out_at is None


def test_unknown_fields_are_stored_and_ignored(client: Client, meta_acme: Channel) -> None:
    [event] = deliver_meta(client, payload("meta/unknown_field.json"))

    assert event.state == "ignored"
    assert event.last_error == ""


# --- Reliability ----------------------------------------------------------------------------


def test_nothing_is_lost_while_the_broker_is_down(
    client: Client, meta_acme: Channel, broker_proxy: TcpProxy
) -> None:
    with broker_proxy.down():
        response = post_meta(client, payload("meta/text.json"))
        assert response.status_code == 200
        assert dispatcher.wait_idle()
        assert WebhookEvent.objects.get().state == "received"
        assert webhook_events_requeue_stale(received_before_seconds=0) == 0

    assert webhook_events_requeue_stale(received_before_seconds=0) == 1
    settled()
    assert Message.objects.count() == 1


# --- Twilio ---------------------------------------------------------------------------------


def deliver_twilio(
    client: Client, kind: str, params: dict[str, str], count: int = 1
) -> list[WebhookEvent]:
    assert post_twilio(client, kind, params).status_code == 200
    return settled(count)


def test_twilio_messages_of_each_kind_are_stored(client: Client, twilio_acme: Channel) -> None:
    deliver_twilio(client, "inbound", payload("twilio/inbound_text.json"))
    deliver_twilio(client, "inbound", payload("twilio/inbound_location.json"), count=2)

    text = Message.objects.get(type="text")
    assert text.text == payload("twilio/inbound_text.json")["Body"]
    assert text.contact.wa_id == "16315551181"
    assert text.contact.profile_name == "Kerry Fisher"
    location = Message.objects.get(type="location")
    assert location.content["Latitude"] == payload("twilio/inbound_location.json")["Latitude"]


def test_a_twilio_button_reply_is_linked_to_our_message(
    client: Client, twilio_acme: Channel
) -> None:
    params = payload("twilio/inbound_button.json")
    ours = outbound(twilio_acme, params["OriginalRepliedMessageSid"])

    deliver_twilio(client, "inbound", params)

    message = Message.objects.get(direction="in")
    assert message.type == "button"
    assert message.reply_to == ours
    assert message.text == params["ButtonText"]


def test_a_twilio_user_known_only_by_business_scoped_id_is_a_contact(
    client: Client, twilio_acme: Channel
) -> None:
    deliver_twilio(client, "inbound", payload("twilio/inbound_bsuid.json"))

    contact = Contact.objects.get()
    assert contact.wa_id is None
    assert contact.user_id == "US.13491208655302741918"


def test_twilio_media_is_downloaded_with_the_account_credentials(
    client: Client, twilio_acme: Channel, provider_api: ProviderState, settings: Any
) -> None:
    params = payload("twilio/inbound_media.json")
    media_path = params["MediaUrl0"].split("api.twilio.com", 1)[1]
    params["MediaUrl0"] = settings.TWILIO_API_BASE_URL + media_path
    provider_api.twilio_auth = (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)
    provider_api.media[media_path.rsplit("/", 1)[1]] = (b"\xff\xd8jpeg" * 500, "image/jpeg")

    deliver_twilio(client, "inbound", params)

    asset = wait_for(lambda: MediaAsset.objects.exclude(state="pending").first())
    assert isinstance(asset, MediaAsset)
    assert (asset.state, asset.error) == ("stored", "")
    with archive_storage().open(asset.storage_key) as stored:
        assert stored.read() == b"\xff\xd8jpeg" * 500


def test_twilio_statuses_move_forward_and_failures_keep_their_code(
    client: Client, twilio_acme: Channel
) -> None:
    sid = payload("twilio/status_sent.json")["MessageSid"]
    message = outbound(twilio_acme, sid, status="queued")

    for count, name in enumerate(("status_sent", "status_delivered", "status_read"), start=1):
        deliver_twilio(client, "status", payload(f"twilio/{name}.json"), count=count)
    message.refresh_from_db()
    assert message.status == "read"

    other = outbound(twilio_acme, "SM" + "3" * 32, status="sent")
    deliver_twilio(
        client,
        "status",
        {
            **payload("twilio/status_undelivered.json"),
            "MessageSid": str(other.provider_message_id),
            "SmsSid": str(other.provider_message_id),
        },
        count=4,
    )
    other.refresh_from_db()
    assert other.status == "failed"
    assert other.error_code == "63024"


def test_a_twilio_status_for_an_unknown_message_is_answered_and_kept(
    client: Client, twilio_acme: Channel
) -> None:
    [event] = deliver_twilio(client, "status", payload("twilio/status_failed.json"))

    assert event.state == "processed"
    message = MessageFactory(channel=twilio_acme, status="sending")
    message_provider_id_record(
        message_id=message.id,
        provider_message_id=payload("twilio/status_failed.json")["MessageSid"],
    )
    message.refresh_from_db()
    assert message.status == "failed"
    assert message.error_code == "63016"


def test_an_event_that_keeps_failing_ends_in_dead_letters_and_stays_failed(
    client: Client, meta_acme: Channel, sqs_queues: dict[str, QueueSetup]
) -> None:
    body = payload("meta/text.json")
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["from"]

    assert post_meta(client, body).status_code == 200

    # WEBHOOK_PROCESS_MAX_RETRIES=2 in the tests: three attempts, then the dead-letter queue.
    event = wait_for(lambda: WebhookEvent.objects.filter(state="failed", attempts=3).first(), 60)
    assert isinstance(event, WebhookEvent)
    client_sqs = sqs_client()
    seen: list[TaskMessage] = []

    def dead_letters_of_this_event() -> list[TaskMessage]:
        response = client_sqs.receive_message(
            QueueUrl=sqs_queues["incoming"].dead_letter_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
        )
        seen.extend(decode_task_message(m["Body"]) for m in response.get("Messages", []))
        return [m for m in seen if m.args == [[event.id]]]

    dead = wait_for(dead_letters_of_this_event, 30)
    assert isinstance(dead, list)
    assert [m.task for m in dead] == ["webhooks.tasks.process_webhook_events"]
    assert "EventsFailed" in dead[0].headers["dead_letter"]["error"]


def test_statuses_the_platform_does_not_track_are_ignored_not_failed(
    client: Client, meta_acme: Channel, edit
) -> None:
    message = outbound(meta_acme, "wamid.OUTBOUND0001", status="read")
    played = edit(
        payload("meta/status_read.json"), lambda v: v["statuses"][0].update(status="played")
    )

    [event] = deliver_meta(client, played)

    assert event.state == "ignored"
    message.refresh_from_db()
    assert message.status == "read"
