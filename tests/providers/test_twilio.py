"""The Twilio backend against the local Twilio API: form fields, answers and error classes."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from conversations.models import Message
from conversations.sending import message_send
from tests.factories import MessageFactory
from tests.fakes import ProviderState
from whatsapp_platform.lib.providers.base import OutboundMessage, backend_for
from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderOutcomeUnknownError,
    ProviderPermanentError,
    ProviderRetryableError,
    SendSlotMissed,
)
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db

TO = "447700900461"
CALLBACK = "https://platform.example.test/webhooks/twilio/status/?message_id=77"


def send(channel: Channel, type: str, content: dict[str, Any], message_id: int = 77):
    return backend_for(channel).send(
        channel, OutboundMessage(message_id=message_id, to=TO, type=type, content=content)
    )


def form(state: ProviderState) -> dict[str, list[str]]:
    (request,) = state.sends()
    return parse_qs(request.body.decode())


def test_a_text_goes_from_the_sender_with_our_status_callback(provider_api, twilio_channel) -> None:
    result = send(twilio_channel, "text", {"body": "Your parcel left the depot."})

    (request,) = provider_api.sends()
    assert request.path == f"/2010-04-01/Accounts/{twilio_channel.account_sid}/Messages.json"
    assert parse_qs(request.body.decode()) == {
        "To": [f"whatsapp:+{TO}"],
        "From": [twilio_channel.sender],
        "Body": ["Your parcel left the depot."],
        "StatusCallback": [CALLBACK],
    }
    assert result.provider_message_id.startswith("SM")


def test_a_messaging_service_sends_instead_of_the_sender(provider_api, twilio_channel) -> None:
    twilio_channel.messaging_service_sid = "MG" + "1" * 32
    twilio_channel.save()

    send(twilio_channel, "text", {"body": "Hi"})

    fields = form(provider_api)
    assert fields["MessagingServiceSid"] == ["MG" + "1" * 32]
    assert "From" not in fields


def test_a_template_is_sent_by_its_content_sid_with_variables_as_a_json_string(
    provider_api, twilio_channel
) -> None:
    send(
        twilio_channel,
        "template",
        {
            "template": {
                "name": "order_shipped",
                "language": "en",
                "provider_template_id": "HX" + "a" * 32,
                "body_parameters": ["Dana", "#48213"],
            }
        },
    )

    fields = form(provider_api)
    assert fields["ContentSid"] == ["HX" + "a" * 32]
    (variables,) = fields["ContentVariables"]
    assert json.loads(variables) == {"1": "Dana", "2": "#48213"}
    assert "Body" not in fields
    assert fields["StatusCallback"] == [CALLBACK]


def test_a_template_without_variables_sends_none(provider_api, twilio_channel) -> None:
    send(
        twilio_channel,
        "template",
        {"template": {"name": "hello", "language": "en", "provider_template_id": "HX" + "b" * 32}},
    )

    fields = form(provider_api)
    assert fields["ContentSid"] == ["HX" + "b" * 32]
    assert "ContentVariables" not in fields


@pytest.mark.parametrize("type", ["image", "document", "video", "audio", "sticker"])
def test_media_goes_by_its_url_with_the_caption_as_body(provider_api, twilio_channel, type) -> None:
    send(
        twilio_channel,
        type,
        {"media": {"link": "https://files.example.test/f", "caption": "Here it is"}},
    )

    fields = form(provider_api)
    assert fields["MediaUrl"] == ["https://files.example.test/f"]
    assert fields["Body"] == ["Here it is"]


@pytest.mark.parametrize(
    ("type", "content", "error"),
    [
        ("interactive", {"interactive": {"type": "button"}}, "no free-form interactive"),
        ("image", {"media": {"media_id": "123"}}, "by its link only"),
        ("template", {"template": {"name": "hello"}}, "Content SID"),
        ("location", {}, "cannot send messages of type 'location'"),
    ],
)
def test_a_message_twilio_cannot_take_fails_before_any_request(
    provider_api, twilio_channel, type, content, error
) -> None:
    with pytest.raises(ProviderPermanentError, match=error):
        send(twilio_channel, type, content)

    assert provider_api.sends() == []


def twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (429, twilio_error(20429, "Too Many Requests", 429), "20429"),
        (400, twilio_error(63018, "Rate limit exceeded for Channel", 400), "63018"),
        (500, twilio_error(20500, "Internal Server Error", 500), "20500"),
        (503, {"message": "Service Unavailable", "status": 503}, "503"),
    ],
)
def test_rate_limits_and_outages_are_retryable(provider_api, twilio_channel, status, body, code):
    provider_api.send_errors.append((status, body))

    with pytest.raises(ProviderRetryableError) as caught:
        send(twilio_channel, "text", {"body": "Hi"})

    assert caught.value.code == code
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            twilio_error(
                21211, "The 'To' number whatsapp:+447700900461 is not a valid phone number.", 400
            ),
            "21211",
        ),
        (
            twilio_error(
                63016,
                "Failed to send freeform message because you are outside the allowed window.",
                400,
            ),
            "63016",
        ),
        (twilio_error(21610, "Attempt to send to unsubscribed recipient", 400), "21610"),
        (twilio_error(63024, "Invalid message recipient", 400), "63024"),
        (
            twilio_error(
                63007, "Twilio could not find a Channel with the specified From address", 400
            ),
            "63007",
        ),
    ],
)
def test_bad_requests_are_permanent_and_keep_twilio_s_code(
    provider_api, twilio_channel, body, code
) -> None:
    provider_api.send_errors.append((400, body))

    with pytest.raises(ProviderPermanentError) as caught:
        send(twilio_channel, "text", {"body": "Hi"})

    assert not isinstance(caught.value, ProviderCredentialError)
    assert caught.value.code == code
    # Twilio quotes the number back; it is not kept in the error.
    assert "447700900461" not in str(caught.value)


def test_an_rfc_9457_error_is_classified_too(provider_api, twilio_channel) -> None:
    provider_api.send_errors.append(
        (
            401,
            {
                "type": "https://www.twilio.com/docs/errors/20003",
                "title": "Authentication Error",
                "status": 401,
                "code": 20003,
                "detail": "Your AccountSid or AuthToken was incorrect.",
            },
        )
    )

    with pytest.raises(ProviderCredentialError) as caught:
        send(twilio_channel, "text", {"body": "Hi"})

    assert caught.value.code == "20003"


def test_a_wrong_auth_token_fails_the_message_and_flags_the_channel(
    provider_api, twilio_channel
) -> None:
    twilio_channel.auth_token = "not-the-token"
    twilio_channel.save()
    message = MessageFactory(
        channel=twilio_channel,
        status=Message.Status.QUEUED,
        type="text",
        content={"body": "Hi"},
        contact__last_inbound_at=timezone.now(),  # free-form: inside the 24-hour window
    )

    assert message_send(message_id=message.id) == Message.Status.FAILED

    message.refresh_from_db()
    twilio_channel.refresh_from_db()
    assert message.error_code == "20003"
    assert twilio_channel.credential_error
    assert "not-the-token" not in twilio_channel.credential_error


def test_a_send_answered_too_late_has_an_unknown_outcome_not_a_retry_twilio(
    provider_api, twilio_channel, settings
) -> None:
    settings.PROVIDER_READ_TIMEOUT = 0.3
    provider_api.send_latency = 1.5
    try:
        # The request went out: the message may have been accepted, so it is not sent again.
        with pytest.raises(ProviderOutcomeUnknownError):
            send(twilio_channel, "text", {"body": "Hi"})
    finally:
        provider_api.send_latency = 0.0


def test_a_send_past_its_deadline_sends_nothing_twilio(provider_api, twilio_channel) -> None:
    message = OutboundMessage(message_id=77, to=TO, type="text", content={"body": "Hi"})

    with pytest.raises(SendSlotMissed):
        backend_for(twilio_channel).send(
            twilio_channel, message, not_after=time.monotonic() - 0.001
        )

    assert provider_api.sends() == []


def test_an_unreachable_twilio_is_a_retryable_error(provider_api, twilio_channel, settings):
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens

    with pytest.raises(ProviderRetryableError) as caught:
        send(twilio_channel, "text", {"body": "Hi"})

    assert caught.value.code == "connection"


def test_a_sent_message_records_twilio_s_sid(provider_api, twilio_channel) -> None:
    message = MessageFactory(
        channel=twilio_channel,
        status=Message.Status.QUEUED,
        type="text",
        content={"body": "Hi"},
        contact__last_inbound_at=timezone.now(),  # free-form: inside the 24-hour window
    )

    assert message_send(message_id=message.id) == Message.Status.SENT

    message.refresh_from_db()
    assert message.provider_message_id.startswith("SM")
    assert form(provider_api)["StatusCallback"] == [
        f"https://platform.example.test/webhooks/twilio/status/?message_id={message.id}"
    ]
