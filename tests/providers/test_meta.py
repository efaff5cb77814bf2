"""The Meta backend against the local Graph API: request bodies, answers and error classes."""

from __future__ import annotations

import time
from typing import Any

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

TO = "16315551181"
ENVELOPE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO}


def send(channel: Channel, type: str, content: dict[str, Any], message_id: int = 42):
    return backend_for(channel).send(
        channel, OutboundMessage(message_id=message_id, to=TO, type=type, content=content)
    )


def graph_error(code: int, message: str, details: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "Ab3xQ9cTmVnR2sLk0pZ7wYe",
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


CASES = [
    (
        "text",
        {"body": "Your parcel left the depot.", "preview_url": True},
        {"text": {"body": "Your parcel left the depot.", "preview_url": True}},
    ),
    (
        "text",
        {"body": "Yes, we can change the address.", "reply_to": "wamid.INBOUND1"},
        {
            "context": {"message_id": "wamid.INBOUND1"},
            "text": {"body": "Yes, we can change the address.", "preview_url": False},
        },
    ),
    (
        "template",
        {
            "template": {
                "name": "order_shipped",
                "language": "en_US",
                "body_parameters": ["Dana", "#48213"],
                "header": {"type": "image", "media_id": "1003383421387256"},
                "buttons": [
                    {"index": 0, "sub_type": "quick_reply", "parameter": "TRACK_48213"},
                    {"index": 1, "sub_type": "url", "parameter": "48213"},
                    {"index": 2, "sub_type": "copy_code", "parameter": "SAVE10"},
                ],
            }
        },
        {
            "template": {
                "name": "order_shipped",
                "language": {"code": "en_US"},
                "components": [
                    {
                        "type": "header",
                        "parameters": [{"type": "image", "image": {"id": "1003383421387256"}}],
                    },
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Dana"},
                            {"type": "text", "text": "#48213"},
                        ],
                    },
                    {
                        "type": "button",
                        "sub_type": "quick_reply",
                        "index": "0",
                        "parameters": [{"type": "payload", "payload": "TRACK_48213"}],
                    },
                    {
                        "type": "button",
                        "sub_type": "url",
                        "index": "1",
                        "parameters": [{"type": "text", "text": "48213"}],
                    },
                    {
                        "type": "button",
                        "sub_type": "copy_code",
                        "index": "2",
                        "parameters": [{"type": "coupon_code", "coupon_code": "SAVE10"}],
                    },
                ],
            }
        },
    ),
    (
        "template",
        {
            "template": {
                "name": "invoice_ready",
                "language": "de",
                "header": {"type": "text", "parameters": ["März"]},
                "body_parameters": [{"type": "text", "parameter_name": "name", "text": "Jo"}],
            }
        },
        {
            "template": {
                "name": "invoice_ready",
                "language": {"code": "de"},
                "components": [
                    {"type": "header", "parameters": [{"type": "text", "text": "März"}]},
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "parameter_name": "name", "text": "Jo"}],
                    },
                ],
            }
        },
    ),
    (
        "template",
        {
            "template": {
                "name": "statement",
                "language": "en_GB",
                "header": {
                    "type": "document",
                    "link": "https://files.example.test/s.pdf",
                    "filename": "statement.pdf",
                },
            }
        },
        {
            "template": {
                "name": "statement",
                "language": {"code": "en_GB"},
                "components": [
                    {
                        "type": "header",
                        "parameters": [
                            {
                                "type": "document",
                                "document": {
                                    "link": "https://files.example.test/s.pdf",
                                    "filename": "statement.pdf",
                                },
                            }
                        ],
                    }
                ],
            }
        },
    ),
    (
        "image",
        {"media": {"link": "https://files.example.test/a.jpg", "caption": "Your parcel"}},
        {"image": {"link": "https://files.example.test/a.jpg", "caption": "Your parcel"}},
    ),
    (
        "document",
        {"media": {"media_id": "778", "caption": "Invoice", "filename": "invoice.pdf"}},
        {"document": {"id": "778", "caption": "Invoice", "filename": "invoice.pdf"}},
    ),
    (
        "audio",
        # Audio and stickers have no caption at Meta: it is left out, not sent to be refused.
        {"media": {"media_id": "779", "caption": "ignored"}},
        {"audio": {"id": "779"}},
    ),
    (
        "video",
        {"media": {"link": "https://files.example.test/v.mp4", "caption": "How to"}},
        {"video": {"link": "https://files.example.test/v.mp4", "caption": "How to"}},
    ),
    ("sticker", {"media": {"media_id": "780"}}, {"sticker": {"id": "780"}}),
]
INTERACTIVE_BUTTONS = {
    "type": "button",
    "body": {"text": "Reschedule the delivery?"},
    "action": {
        "buttons": [
            {"type": "reply", "reply": {"id": "resched_yes", "title": "Yes, reschedule"}},
            {"type": "reply", "reply": {"id": "resched_no", "title": "No, keep it"}},
        ]
    },
}
INTERACTIVE_LIST = {
    "type": "list",
    "body": {"text": "Pick a delivery slot"},
    "action": {
        "button": "See slots",
        "sections": [
            {
                "title": "Wednesday",
                "rows": [{"id": "slot_am", "title": "Wed 9:00-12:00", "description": "Call ahead"}],
            }
        ],
    },
}
CASES += [
    ("interactive", {"interactive": INTERACTIVE_BUTTONS}, {"interactive": INTERACTIVE_BUTTONS}),
    ("interactive", {"interactive": INTERACTIVE_LIST}, {"interactive": INTERACTIVE_LIST}),
]


@pytest.mark.parametrize(("type", "content", "expected"), CASES)
def test_each_message_type_is_posted_as_the_graph_api_expects(
    provider_api: ProviderState, meta_channel: Channel, type, content, expected
) -> None:
    result = send(meta_channel, type, content, message_id=4242)

    (request,) = provider_api.sends()
    assert request.path == f"/v26.0/{meta_channel.phone_number_id}/messages"
    assert request.headers["Authorization"] == "Bearer EAAG-test-access-token"
    assert request.json() == {
        **ENVELOPE,
        "type": type,
        "biz_opaque_callback_data": "4242",
        **expected,
    }
    assert result.provider_message_id.startswith("wamid.")
    assert result.wa_id == TO


def test_the_wa_id_meta_resolved_is_returned(provider_api, meta_channel) -> None:
    result = send(meta_channel, "text", {"body": "Hi"})

    assert result.wa_id == TO
    assert len(result.provider_message_id) > len("wamid.")


@pytest.mark.parametrize(
    ("type", "content", "error"),
    [
        ("image", {"media": {"caption": "no file"}}, "needs a link or a media id"),
        ("interactive", {}, "needs its interactive object"),
        ("location", {"location": {}}, "cannot send messages of type 'location'"),
        ("template", {"template": {"language": "en_US"}}, "needs the template's name"),
    ],
)
def test_a_message_meta_cannot_take_fails_before_any_request(
    provider_api, meta_channel, type, content, error
) -> None:
    with pytest.raises(ProviderPermanentError, match=error):
        send(meta_channel, type, content)

    assert provider_api.sends() == []


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, 130429, "(#130429) Rate limit hit"),
        (400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"),
        (400, 4, "(#4) Application request limit reached"),
        (400, 80007, "(#80007) Rate limit issues"),
        (500, 131000, "(#131000) Something went wrong"),
        (503, 2, "Service temporarily unavailable"),
        (503, 131016, "(#131016) Service unavailable"),
        (400, 131057, "(#131057) Account in maintenance mode"),
        (400, 133016, "(#133016) Account register deregister rate limit exceeded"),
        (500, 100, "An unexpected error has occurred. Please retry your request later."),
    ],
)
def test_throttling_and_outages_are_retryable_whatever_the_http_status(
    provider_api, meta_channel, status, code, message
) -> None:
    provider_api.send_errors.append((status, graph_error(code, message)))

    with pytest.raises(ProviderRetryableError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert caught.value.code == str(code)
    assert caught.value.status == status


def test_the_pair_rate_limit_says_when_to_try_that_recipient_again(
    provider_api, meta_channel, settings
) -> None:
    settings.PAIR_RATE_SECONDS = 6.0
    provider_api.send_errors.append(
        (
            400,
            graph_error(
                131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"
            ),
        )
    )

    with pytest.raises(ProviderRetryableError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert caught.value.retry_after == 6.0


@pytest.mark.parametrize(
    ("code", "message", "details"),
    [
        (131026, "(#131026) Message undeliverable", "Message Undeliverable."),
        (
            131047,
            "(#131047) Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer "
            "last replied to this number.",
        ),
        (
            131048,
            "(#131048) Spam rate limit hit",
            "Message failed to send because there are restrictions on how many messages can be sent from this phone number.",
        ),
        (
            131049,
            "(#131049) Meta chose not to deliver.",
            "This message was not delivered to maintain healthy ecosystem engagement.",
        ),
        (
            131050,
            "(#131050) Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business",
            "",
        ),
        (131051, "(#131051) Unsupported message type", ""),
        (132000, "(#132000) Number of parameters does not match the expected number of params", ""),
        (
            132001,
            "(#132001) Template name does not exist in the translation",
            "template name (order_shipped) does not exist in en_US",
        ),
        (132015, "(#132015) Template is Paused", ""),
        (100, "(#100) Invalid parameter", ""),
    ],
)
def test_bad_requests_are_permanent_and_keep_meta_s_code(
    provider_api, meta_channel, code, message, details
) -> None:
    provider_api.send_errors.append((400, graph_error(code, message, details)))

    with pytest.raises(ProviderPermanentError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert not isinstance(caught.value, ProviderCredentialError)
    assert caught.value.code == str(code)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (401, 190, "Error validating access token: Session has expired on Monday, 02-Nov-26."),
        (401, 0, "(#0) AuthException"),
        (403, 10, "(#10) Application does not have permission for this action"),
        (403, 200, "(#200) Permissions error"),
        (403, 294, "(#294) Managing advertisements requires an access token"),
    ],
)
def test_token_and_permission_errors_are_credential_errors(
    provider_api, meta_channel, status, code, message
) -> None:
    provider_api.send_errors.append((status, graph_error(code, message)))

    with pytest.raises(ProviderCredentialError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert caught.value.code == str(code)


def test_phone_numbers_in_meta_s_error_text_are_not_kept(provider_api, meta_channel) -> None:
    provider_api.send_errors.append(
        (
            400,
            graph_error(
                131030,
                "(#131030) Recipient phone number not in allowed list",
                "16315551181 is not allowed",
            ),
        )
    )

    with pytest.raises(ProviderPermanentError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert "16315551181" not in str(caught.value)
    assert caught.value.code == "131030"


def test_a_send_answered_too_late_has_an_unknown_outcome_not_a_retry_graph_api(
    provider_api, meta_channel, settings
) -> None:
    settings.PROVIDER_READ_TIMEOUT = 0.3
    provider_api.send_latency = 1.5
    try:
        # The request went out: the message may have been accepted, so it is not sent again.
        with pytest.raises(ProviderOutcomeUnknownError):
            send(meta_channel, "text", {"body": "Hi"})
    finally:
        provider_api.send_latency = 0.0


def test_a_send_past_its_deadline_sends_nothing_and_the_next_one_goes_out(
    provider_api, meta_channel
) -> None:
    backend = backend_for(meta_channel)
    message = OutboundMessage(message_id=7, to=TO, type="text", content={"body": "Hi"})
    backend.send(meta_channel, message)  # a kept-alive connection, as in a campaign

    # A paced call that reached the socket after its slot's deadline never starts: it takes
    # a new slot instead of bunching up with the calls after it.
    with pytest.raises(SendSlotMissed):
        backend.send(meta_channel, message, not_after=time.monotonic() - 0.001)
    assert len(provider_api.sends()) == 1

    result = backend.send(meta_channel, message, not_after=time.monotonic() + 10)
    assert result.provider_message_id.startswith("wamid.")
    assert len(provider_api.sends()) == 2


def test_an_unreachable_graph_api_is_a_retryable_error(
    provider_api, meta_channel, settings
) -> None:
    settings.META_GRAPH_API_BASE_URL = "http://127.0.0.1:9"  # discard port: nothing listens

    with pytest.raises(ProviderRetryableError) as caught:
        send(meta_channel, "text", {"body": "Hi"})

    assert caught.value.code == "connection"


def test_an_expired_token_fails_the_message_and_flags_the_channel(
    provider_api, meta_channel
) -> None:
    meta_channel.access_token = "EAAG-expired"
    meta_channel.save()
    message = MessageFactory(
        channel=meta_channel,
        status=Message.Status.QUEUED,
        type="text",
        content={"body": "Hi"},
        contact__last_inbound_at=timezone.now(),  # free-form: inside the 24-hour window
    )

    assert message_send(message_id=message.id) == Message.Status.FAILED

    message.refresh_from_db()
    meta_channel.refresh_from_db()
    assert message.error_code == "190"
    assert "Invalid OAuth access token" in message.error_message
    assert meta_channel.credential_error
    assert "EAAG-expired" not in meta_channel.credential_error


def test_a_sent_message_records_meta_s_wamid(provider_api, meta_channel) -> None:
    message = MessageFactory(
        channel=meta_channel,
        status=Message.Status.QUEUED,
        type="text",
        content={"body": "Hi"},
        contact__last_inbound_at=timezone.now(),  # free-form: inside the 24-hour window
    )

    assert message_send(message_id=message.id) == Message.Status.SENT

    message.refresh_from_db()
    (request,) = provider_api.sends()
    assert request.json()["biz_opaque_callback_data"] == str(message.id)
    assert message.provider_message_id.startswith("wamid.FAKE")
