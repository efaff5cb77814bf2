"""POST /api/messaging/send/: every rule a message passes before it is queued, and its answers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from conversations.models import Contact, Message
from tests.conversations.conftest import ApiCaller
from tests.factories import (
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    MessageTemplateFactory,
    TwilioChannelFactory,
)
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db

NUMBER = "+49 151 12345678"
WA_ID = "4915112345678"


def text(body: str = "Your parcel left the depot.", **extra):
    return {"to": NUMBER, "type": "text", "text": {"body": body}, **extra}


def template(name: str, parameters=None, **extra):
    spec = {"name": name, "language": "en_US"}
    if parameters is not None:
        spec["parameters"] = parameters
    spec.update(extra.pop("spec", {}))
    return {"to": NUMBER, "type": "template", "template": spec, **extra}


# --- Free-form messages and the 24-hour window ----------------------------------------------


def test_text_inside_the_window_is_queued(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(**text(), priority="high")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["to"] == WA_ID
    assert body["channel"] == meta_channel.id
    assert body["priority"] == "high"
    message = Message.objects.get(id=body["id"])
    assert message.contact == chatting_contact
    assert message.direction == Message.Direction.OUTBOUND
    assert message.content == {"body": "Your parcel left the depot.", "preview_url": False}
    assert message.priority == Message.Priority.HIGH


def test_priority_defaults_to_normal(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(**text())

    assert response.json()["priority"] == "normal"
    assert Message.objects.get().priority == Message.Priority.NORMAL


def test_free_form_after_24_hours_is_refused(api: ApiCaller, meta_channel, chatting_contact):
    Contact.objects.filter(id=chatting_contact.id).update(
        last_inbound_at=timezone.now() - timedelta(hours=25)
    )

    response = api.send(**text())

    assert response.status_code == 422
    assert response.json()["code"] == "outside_service_window"
    assert "24 hours" in response.json()["detail"]
    assert not Message.objects.exists()


def test_free_form_to_an_unknown_number_is_refused(api: ApiCaller, meta_channel):
    response = api.send(**text())

    assert response.status_code == 422
    assert response.json()["code"] == "outside_service_window"
    assert not Contact.objects.exists()


def test_nothing_goes_to_an_opted_out_contact(api: ApiCaller, meta_channel, chatting_contact):
    Contact.objects.filter(id=chatting_contact.id).update(opted_out_at=timezone.now())
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")

    for body in (text(), template("order_shipped", ["#48213"])):
        response = api.send(**body)

        assert response.status_code == 422
        assert response.json()["code"] == "contact_opted_out"
    assert not Message.objects.exists()


@pytest.mark.parametrize("number", ["12345", "not a number", "+1555"])
def test_an_invalid_number_is_refused(api: ApiCaller, meta_channel, number):
    response = api.send(**{**text(), "to": number})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_number"
    assert "to" in response.json()["errors"]


def test_numbers_are_normalised_to_e164(api: ApiCaller, meta_channel, chatting_contact):
    for number in ("+49 151 12345678", "0049-151-12345678", "whatsapp:+4915112345678"):
        response = api.send(**{**text(), "to": number})

        assert response.status_code == 202
        assert response.json()["to"] == WA_ID
    assert set(Message.objects.values_list("contact_id", flat=True)) == {chatting_contact.id}


# --- Shape --------------------------------------------------------------------------------


def test_a_text_message_needs_its_text(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(to=NUMBER, type="text")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "text" in response.json()["errors"]


def test_content_of_another_type_is_refused(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(**text(), media={"type": "image", "link": "https://example.com/a.jpg"})

    assert response.status_code == 400
    assert "media" in response.json()["errors"]


def test_an_unknown_type_and_priority_are_refused(api: ApiCaller, meta_channel):
    response = api.send(to=NUMBER, type="fax", priority="urgent")

    assert response.status_code == 400
    assert set(response.json()["errors"]) >= {"type", "priority"}


def test_a_body_that_is_not_json_is_a_400(api: ApiCaller, meta_channel):
    response = api.client.post(
        "/api/messaging/send/",
        "{not json",
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.raw_key}"},
    )

    assert response.status_code == 400


def test_the_api_needs_a_key(client, meta_channel):
    response = client.post("/api/messaging/send/", text(), content_type="application/json")

    assert response.status_code == 401


# --- Channels -----------------------------------------------------------------------------


def test_the_channel_is_required_when_there_are_several(
    api: ApiCaller, meta_channel, chatting_contact
):
    second = ChannelFactory(organization=api.organization)

    response = api.send(**text())

    assert response.status_code == 400
    assert response.json()["code"] == "channel_required"
    assert api.send(**text(), channel=second.id).status_code == 202


def test_another_organizations_channel_is_not_found(
    api: ApiCaller, other_api: ApiCaller, meta_channel, chatting_contact
):
    theirs = Channel.objects.get(organization=other_api.organization)

    response = api.send(**text(), channel=theirs.id)

    assert response.status_code == 404
    assert response.json()["code"] == "channel_not_found"
    assert not Message.objects.exists()


def test_an_organization_without_an_active_channel_is_told_so(
    api: ApiCaller, meta_channel, chatting_contact
):
    Channel.objects.filter(id=meta_channel.id).update(is_active=False)

    response = api.send(**text())

    assert response.status_code == 409
    assert response.json()["code"] == "no_active_channel"


def test_an_inactive_channel_is_refused_with_the_reason(
    api: ApiCaller, meta_channel, chatting_contact
):
    Channel.objects.filter(id=meta_channel.id).update(is_active=False)

    response = api.send(**text(), channel=meta_channel.id)

    assert response.status_code == 409
    assert response.json()["code"] == "channel_inactive"


def test_a_channel_with_rejected_credentials_is_refused(
    api: ApiCaller, meta_channel, chatting_contact
):
    Channel.objects.filter(id=meta_channel.id).update(
        credential_error="(#190) Invalid OAuth access token.", credential_error_at=timezone.now()
    )

    response = api.send(**text())

    assert response.status_code == 409
    assert response.json()["code"] == "channel_credential_error"
    assert "Invalid OAuth access token" in response.json()["detail"]


INTERACTIVE = {
    "type": "button",
    "body": {"text": "Reschedule the delivery?"},
    "action": {
        "buttons": [
            {"type": "reply", "reply": {"id": "resched_yes", "title": "Yes, reschedule"}},
            {"type": "reply", "reply": {"id": "resched_no", "title": "No, keep it"}},
        ]
    },
}


def test_interactive_buttons_are_queued_on_meta(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(to=NUMBER, type="interactive", interactive=INTERACTIVE)

    assert response.status_code == 202
    message = Message.objects.get()
    assert message.type == Message.Type.INTERACTIVE
    assert message.content == {"interactive": INTERACTIVE}


def test_twilio_cannot_send_free_form_interactive(api: ApiCaller, organization):
    TwilioChannelFactory(organization=organization)
    ContactFactory(organization=organization, wa_id=WA_ID, last_inbound_at=timezone.now())

    response = api.send(to=NUMBER, type="interactive", interactive=INTERACTIVE)

    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_type"


def test_interactive_beyond_metas_limits_is_refused(api: ApiCaller, meta_channel):
    four_buttons = {
        **INTERACTIVE,
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": f"b{i}", "title": f"Option {i}"}}
                for i in range(4)
            ]
        },
    }

    response = api.send(to=NUMBER, type="interactive", interactive=four_buttons)

    assert response.status_code == 400
    assert "1 to 3 buttons" in str(response.json()["errors"]["interactive"])


# --- Media --------------------------------------------------------------------------------


def test_an_image_by_link_is_queued(api: ApiCaller, meta_channel, chatting_contact):
    response = api.send(
        to=NUMBER,
        type="media",
        media={"type": "image", "link": "https://example.com/parcel.jpg", "caption": "Here"},
    )

    assert response.status_code == 202
    message = Message.objects.get()
    assert message.type == "image"
    assert message.content == {
        "media": {"link": "https://example.com/parcel.jpg", "caption": "Here"}
    }


@pytest.mark.parametrize(
    "media",
    [
        {"type": "image", "link": "https://example.com/a.jpg", "media_id": "123"},
        {"type": "image"},
        {"type": "audio", "media_id": "123", "caption": "Listen"},
        {"type": "image", "link": "https://example.com/a.jpg", "filename": "a.jpg"},
        {"type": "video", "link": "not a url"},
    ],
)
def test_malformed_media_is_refused(api: ApiCaller, meta_channel, chatting_contact, media):
    response = api.send(to=NUMBER, type="media", media=media)

    assert response.status_code == 400
    assert "media" in response.json()["errors"]


def test_twilio_sends_media_by_link_only(api: ApiCaller, organization):
    TwilioChannelFactory(organization=organization)
    ContactFactory(organization=organization, wa_id=WA_ID, last_inbound_at=timezone.now())

    response = api.send(to=NUMBER, type="media", media={"type": "document", "media_id": "42"})

    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_media"


# --- Templates ----------------------------------------------------------------------------


def test_a_template_to_an_unknown_number_creates_the_contact(api: ApiCaller, meta_channel):
    MessageTemplateFactory(
        channel=meta_channel,
        name="order_shipped",
        body="Hi {{1}}, order {{2}} has shipped.",
        provider_template_id="1234567890",
    )

    response = api.send(**template("order_shipped", ["Dana", "#48213"]))

    assert response.status_code == 202
    contact = Contact.objects.get(organization=api.organization)
    assert contact.wa_id == WA_ID
    message = Message.objects.get()
    assert message.contact == contact
    assert message.text == "Hi Dana, order #48213 has shipped."
    assert message.content == {
        "template": {
            "name": "order_shipped",
            "language": "en_US",
            "provider_template_id": "1234567890",
            "category": "utility",
            "body_parameters": ["Dana", "#48213"],
            "header": None,
            "buttons": [],
        }
    }


def test_a_template_outside_the_window_is_allowed(api: ApiCaller, meta_channel, chatting_contact):
    Contact.objects.filter(id=chatting_contact.id).update(
        last_inbound_at=timezone.now() - timedelta(days=3)
    )
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")

    assert api.send(**template("order_shipped", ["#48213"])).status_code == 202


def test_a_template_must_exist_on_that_channel(api: ApiCaller, meta_channel):
    other_channel = ChannelFactory(organization=api.organization)
    MessageTemplateFactory(channel=other_channel, name="order_shipped")

    response = api.send(**template("order_shipped", ["#1"]), channel=meta_channel.id)

    assert response.status_code == 422
    assert response.json()["code"] == "template_not_found"
    assert "order_shipped" in response.json()["detail"]


def test_a_template_must_exist_in_that_language(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped", language="de")

    response = api.send(**template("order_shipped", ["#1"]))

    assert response.status_code == 422
    assert response.json()["code"] == "template_not_found"


@pytest.mark.parametrize("status", ["paused", "disabled", "rejected", "pending"])
def test_only_approved_templates_are_sent(api: ApiCaller, meta_channel, status):
    MessageTemplateFactory(
        channel=meta_channel, name="promo", status=status, status_reason="Low quality rating"
    )

    response = api.send(**template("promo", ["#1"]))

    assert response.status_code == 422
    assert response.json()["code"] == "template_not_approved"
    assert status in response.json()["detail"]
    assert "Low quality rating" in response.json()["detail"]
    assert not Contact.objects.exists()


@pytest.mark.parametrize("parameters", [None, [], ["Dana"], ["Dana", "#1", "extra"], {"1": "x"}])
def test_every_positional_placeholder_must_be_filled(api: ApiCaller, meta_channel, parameters):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped", body="Hi {{1}}, {{2}}.")

    response = api.send(**template("order_shipped", parameters))

    assert response.status_code == 422
    assert response.json()["code"] == "template_parameters"
    assert "{{1}}, {{2}}" in response.json()["detail"]


def test_named_placeholders_take_an_object(api: ApiCaller, meta_channel):
    MessageTemplateFactory(
        channel=meta_channel,
        name="welcome",
        body="Hello {{first_name}}, your code is {{code}}.",
        components=[{"type": "BODY", "text": "Hello {{first_name}}, your code is {{code}}."}],
    )

    missing = api.send(**template("welcome", {"first_name": "Dana"}))
    unknown = api.send(**template("welcome", {"first_name": "Dana", "code": "1", "x": "2"}))
    as_list = api.send(**template("welcome", ["Dana", "1"]))
    good = api.send(**template("welcome", {"first_name": "Dana", "code": "4821"}))

    assert missing.status_code == 422
    assert "missing code" in missing.json()["detail"]
    assert unknown.status_code == 422
    assert "unknown x" in unknown.json()["detail"]
    assert as_list.status_code == 422
    assert good.status_code == 202
    message = Message.objects.get()
    assert message.text == "Hello Dana, your code is 4821."
    # Graph parameter objects, as both providers' backends take named parameters.
    assert message.content["template"]["body_parameters"] == [
        {"type": "text", "parameter_name": "first_name", "text": "Dana"},
        {"type": "text", "parameter_name": "code", "text": "4821"},
    ]


def test_empty_parameter_values_are_refused(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped")

    response = api.send(**template("order_shipped", [" "]))

    assert response.status_code == 400
    assert "template" in response.json()["errors"]


BODY_TEXT = "Hi {{1}}, your order is on its way."
COMPONENTS: list[dict[str, Any]] = [
    {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
    {"type": "BODY", "text": BODY_TEXT},
    {
        "type": "BUTTONS",
        "buttons": [
            {"type": "QUICK_REPLY", "text": "Stop"},
            {"type": "URL", "text": "Track", "url": "https://track.example.com/{{1}}"},
        ],
    },
]


def test_header_and_button_placeholders_must_be_filled(api: ApiCaller, meta_channel):
    MessageTemplateFactory(
        channel=meta_channel, name="tracking", body=BODY_TEXT, components=COMPONENTS
    )
    header = {"type": "text", "parameters": ["#48213"]}
    url_button = {"index": 1, "sub_type": "url", "parameter": "48213"}

    no_header = api.send(**template("tracking", ["Dana"], spec={"buttons": [url_button]}))
    no_button = api.send(**template("tracking", ["Dana"], spec={"header": header}))
    wrong_button = api.send(
        **template(
            "tracking",
            ["Dana"],
            spec={"header": header, "buttons": [{**url_button, "index": 0}]},
        )
    )
    good = api.send(
        **template(
            "tracking",
            ["Dana"],
            spec={
                "header": header,
                "buttons": [
                    url_button,
                    {"index": 0, "sub_type": "quick_reply", "parameter": "STOP"},
                ],
            },
        )
    )

    assert no_header.status_code == 422
    assert "header" in no_header.json()["detail"]
    assert no_button.status_code == 422
    assert "button 1" in no_button.json()["detail"]
    assert wrong_button.status_code == 422
    assert good.status_code == 202
    content = Message.objects.get().content["template"]
    assert content["header"] == header
    assert {"index": 1, "sub_type": "url", "parameter": "48213"} in content["buttons"]


def test_a_media_header_needs_its_media(api: ApiCaller, meta_channel):
    MessageTemplateFactory(
        channel=meta_channel,
        name="receipt",
        body="Your receipt.",
        components=[
            {"type": "HEADER", "format": "DOCUMENT"},
            {"type": "BODY", "text": "Your receipt."},
        ],
    )
    document = {"type": "document", "link": "https://example.com/r.pdf", "filename": "r.pdf"}

    without = api.send(**template("receipt"))
    with_image = api.send(
        **template("receipt", spec={"header": {"type": "image", "link": "https://e.com/a.jpg"}})
    )
    good = api.send(**template("receipt", spec={"header": document}))

    assert without.status_code == 422
    assert "document" in without.json()["detail"]
    assert with_image.status_code == 422
    assert good.status_code == 202
    assert Message.objects.get().content["template"]["header"] == document


# --- Idempotency --------------------------------------------------------------------------


def test_the_same_idempotency_key_returns_the_same_message(
    api: ApiCaller, meta_channel, chatting_contact
):
    first = api.send(**text(), idempotency_key="order-48213")
    again = api.send(**text(), idempotency_key="order-48213")

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1


def test_the_same_key_for_another_message_is_a_conflict(
    api: ApiCaller, meta_channel, chatting_contact
):
    api.send(**text(), idempotency_key="order-48213")

    response = api.send(**text("Something else"), idempotency_key="order-48213")

    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_conflict"
    assert "different message" in response.json()["detail"]
    assert Message.objects.count() == 1


def test_a_key_repeated_after_the_window_closed_still_returns_the_message(
    api: ApiCaller, meta_channel, chatting_contact
):
    first = api.send(**text(), idempotency_key="k1")
    Contact.objects.filter(id=chatting_contact.id).update(
        last_inbound_at=timezone.now() - timedelta(days=2)
    )

    again = api.send(**text(), idempotency_key="k1")

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_idempotency_keys_are_per_organization(
    api: ApiCaller, other_api: ApiCaller, meta_channel, chatting_contact
):
    ContactFactory(organization=other_api.organization, wa_id=WA_ID, last_inbound_at=timezone.now())
    mine = api.send(**text(), idempotency_key="shared-key")

    theirs = other_api.send(**text("Another text"), idempotency_key="shared-key")

    assert theirs.status_code == 202
    assert theirs.json()["id"] != mine.json()["id"]


# --- Replies ------------------------------------------------------------------------------


def test_a_reply_quotes_our_message(api: ApiCaller, meta_channel, chatting_contact):
    inbound = MessageFactory(
        channel=meta_channel,
        contact=chatting_contact,
        direction=Message.Direction.INBOUND,
        status=Message.Status.RECEIVED,
        provider_message_id="wamid.INBOUND1",
    )

    response = api.send(**text(), reply_to=inbound.id)

    assert response.status_code == 202
    message = Message.objects.get(id=response.json()["id"])
    assert message.reply_to == inbound
    assert message.content["reply_to"] == "wamid.INBOUND1"


def test_a_reply_to_another_organizations_message_is_not_found(
    api: ApiCaller, other_api: ApiCaller, meta_channel, chatting_contact
):
    theirs = MessageFactory(
        channel=Channel.objects.get(organization=other_api.organization),
        provider_message_id="wamid.THEIRS",
    )

    response = api.send(**text(), reply_to=theirs.id)

    assert response.status_code == 404
    assert response.json()["code"] == "reply_to_not_found"


def test_a_reply_must_quote_the_same_conversation(api: ApiCaller, meta_channel, chatting_contact):
    elsewhere = MessageFactory(channel=meta_channel, provider_message_id="wamid.ELSE")

    response = api.send(**text(), reply_to=elsewhere.id)

    assert response.status_code == 422
    assert response.json()["code"] == "reply_to_other_conversation"


def test_the_language_may_be_left_out_when_the_template_has_one(api: ApiCaller, meta_channel):
    MessageTemplateFactory(channel=meta_channel, name="order_shipped", language="de")

    response = api.send(
        to=NUMBER, type="template", template={"name": "order_shipped", "parameters": ["#1"]}
    )

    assert response.status_code == 202
    assert Message.objects.get().content["template"]["language"] == "de"


def test_the_language_is_needed_when_the_template_has_several(api: ApiCaller, meta_channel):
    for language in ("de", "en_US"):
        MessageTemplateFactory(channel=meta_channel, name="order_shipped", language=language)

    response = api.send(
        to=NUMBER, type="template", template={"name": "order_shipped", "parameters": ["#1"]}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "template_language_required"
    assert "de, en_US" in response.json()["detail"]


def test_twilio_content_variables_of_urls_are_parameters_too(api: ApiCaller, organization):
    channel = TwilioChannelFactory(organization=organization)
    MessageTemplateFactory(
        channel=channel,
        name="order_tracking",
        language="en",
        body="Hi {{1}}, your order is on its way.",
        provider_template_id="HX" + "1" * 32,
        components=[
            {
                "type": "twilio/call-to-action",
                "body": "Hi {{1}}, your order is on its way.",
                "actions": [
                    {"type": "URL", "title": "Track", "url": "https://t.example.com/{{2}}"}
                ],
            },
        ],
    )

    one = api.send(**template("order_tracking", ["Dana"], spec={"language": "en"}))
    both = api.send(**template("order_tracking", ["Dana", "48213"], spec={"language": "en"}))

    assert one.status_code == 422
    assert "{{1}}, {{2}}" in one.json()["detail"]
    assert both.status_code == 202
    content = Message.objects.get().content["template"]
    assert content["provider_template_id"] == "HX" + "1" * 32
    assert content["body_parameters"] == ["Dana", "48213"]
