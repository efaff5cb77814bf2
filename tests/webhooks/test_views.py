"""The webhook endpoints: only signed deliveries are stored, answered at once, never a 500."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

from tests.factories import ChannelFactory, OrganizationFactory
from tests.webhooks.conftest import (
    META_APP_SECRET,
    TWILIO_AUTH_TOKEN,
    meta_wire,
    payload,
    post_meta,
    post_twilio,
)
from webhooks.models import WebhookEvent
from webhooks.signature import meta_signature, twilio_signature
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db


# --- Meta verification handshake ------------------------------------------------------------


def test_meta_handshake_echoes_the_challenge_for_a_configured_verify_token(
    client: Client, meta_acme: Channel
) -> None:
    response = client.get(
        "/webhooks/meta/",
        {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"},
    )

    assert response.status_code == 200
    assert response.content == b"1158201444"
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "verify-me", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"},
        {},
    ],
)
def test_meta_handshake_refuses_anything_else(client: Client, meta_acme: Channel, params) -> None:
    response = client.get("/webhooks/meta/", params)

    assert response.status_code == 403


# --- Meta deliveries ------------------------------------------------------------------------


def test_a_signed_meta_delivery_is_stored_and_its_processing_enqueued_after_commit(
    client: Client, meta_acme: Channel, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_meta(client, payload("meta/text.json"))

    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.provider == "meta"
    assert event.organization == meta_acme.organization
    assert event.kind == "messages"
    assert event.state == "queued"
    assert len(callbacks) == 1


def test_a_redelivered_body_is_answered_200_and_stored_once(
    client: Client, meta_acme: Channel
) -> None:
    body = meta_wire(payload("meta/status_read.json"))

    responses = [post_meta(client, body) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert WebhookEvent.objects.count() == 1


def test_the_signature_is_checked_over_the_exact_bytes_received(
    client: Client, meta_acme: Channel
) -> None:
    body = payload("meta/text.json")
    body["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = (
        "Grüße 👋 see https://x.example/a"
    )
    wire = meta_wire(body)
    assert b"\\u00fc" in wire
    assert b"\\/" in wire
    reserialised = json.dumps(json.loads(wire)).encode()

    good = post_meta(client, wire)
    bad = post_meta(
        client, wire, **{"X-Hub-Signature-256": meta_signature(reserialised, META_APP_SECRET)}
    )

    assert good.status_code == 200
    assert bad.status_code == 403
    assert WebhookEvent.objects.count() == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, {"X-Hub-Signature-256": "garbage"}],
)
def test_a_missing_or_wrong_signature_is_refused_and_nothing_stored(
    client: Client, meta_acme: Channel, headers
) -> None:
    response = post_meta(client, payload("meta/text.json"), secret=None, **headers)

    assert response.status_code == 403
    assert "signature" in response.json()["error"].lower()
    assert not WebhookEvent.objects.exists()


def test_another_tenants_secret_cannot_vouch_for_this_tenants_number(
    client: Client, meta_acme: Channel
) -> None:
    ChannelFactory(organization=OrganizationFactory(name="Mallory"), app_secret="mallory-secret")

    response = post_meta(client, payload("meta/text.json"), secret="mallory-secret")

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_a_delivery_for_an_unknown_number_signed_by_one_of_our_apps_is_kept_unrouted(
    client: Client, meta_acme: Channel, edit
) -> None:
    body = edit(payload("meta/text.json"), lambda v: v["metadata"].update(phone_number_id="999"))
    body["entry"][0]["id"] = "888"  # a WABA we do not know either

    response = post_meta(client, body)

    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.organization is None


def test_a_delivery_for_an_unknown_number_signed_by_a_stranger_is_refused(
    client: Client, meta_acme: Channel, edit
) -> None:
    body = edit(payload("meta/text.json"), lambda v: v["metadata"].update(phone_number_id="999"))

    response = post_meta(client, body, secret="a-stranger")

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


# --- Bad input ------------------------------------------------------------------------------


def test_a_body_over_4_mib_is_refused_with_413(client: Client, meta_acme: Channel) -> None:
    body = b'{"entry": [], "padding": "' + b"x" * (4 * 1024 * 1024) + b'"}'

    response = post_meta(client, body)

    assert response.status_code == 413
    assert not WebhookEvent.objects.exists()


def test_a_3_mb_batch_is_accepted(client: Client, meta_acme: Channel, edit) -> None:
    body = edit(
        payload("meta/text.json"),
        lambda v: v["messages"][0]["text"].update(body="y" * (3 * 1000 * 1000)),
    )

    response = post_meta(client, body)

    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"{not json", b" ", b"\xff\xfe", b"[]", b'{"entry": "x"}', b"null", b'"\\ud800"'],
)
def test_malformed_bodies_get_400_with_a_message(client: Client, meta_acme: Channel, body) -> None:
    response = post_meta(client, body)

    assert response.status_code == 400
    assert response.json()["error"]
    assert not WebhookEvent.objects.exists()


def test_wrong_method_gets_405(client: Client) -> None:
    assert client.put("/webhooks/meta/", b"{}").status_code == 405
    assert client.get("/webhooks/twilio/inbound/").status_code == 405
    assert client.delete("/webhooks/twilio/status/").status_code == 405


def test_wrong_content_type_gets_415(client: Client, meta_acme: Channel) -> None:
    body = meta_wire(payload("meta/text.json"))

    meta = client.post(
        "/webhooks/meta/",
        body,
        content_type="text/plain",
        headers={"X-Hub-Signature-256": meta_signature(body, META_APP_SECRET)},
    )
    twilio = client.post("/webhooks/twilio/inbound/", b"{}", content_type="application/json")

    assert meta.status_code == 415
    assert twilio.status_code == 415


@pytest.mark.parametrize(
    "body",
    [
        {"object": "whatsapp_business_account", "entry": [{"id": 1, "changes": "nope"}]},
        {"entry": [{"changes": [{"field": "messages", "value": {"metadata": []}}]}]},
        {"entry": [None, 1, "x", {"changes": [None, {"value": "s"}]}]},
    ],
)
def test_odd_shapes_signed_by_a_stranger_never_produce_a_500(
    client: Client, meta_acme: Channel, body
) -> None:
    response = post_meta(client, body, secret="stranger")

    assert response.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_answers_503_so_the_provider_retries(client: Client) -> None:
    body = meta_wire(payload("meta/text.json"))
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = "1"
    try:
        response = post_meta(client, body)
    finally:
        connection.close()
        connection.settings_dict.update(saved)

    assert response.status_code == 503
    assert response["Retry-After"]


# --- Twilio ---------------------------------------------------------------------------------


def test_a_signed_twilio_message_is_stored_and_answered_with_empty_twiml(
    client: Client, twilio_acme: Channel
) -> None:
    response = post_twilio(client, "inbound", payload("twilio/inbound_text.json"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content == b'<?xml version="1.0" encoding="UTF-8"?><Response />'
    event = WebhookEvent.objects.get()
    assert (event.provider, event.kind, event.channel) == ("twilio", "messages", twilio_acme)


def test_the_twilio_signature_is_checked_against_the_public_url(
    client: Client, twilio_acme: Channel, settings
) -> None:
    params = payload("twilio/inbound_text.json")
    # Behind the TLS-terminating proxy Django sees http://testserver; Twilio signed the public URL.
    assert not settings.PUBLIC_BASE_URL.startswith("http://testserver")

    ok = post_twilio(client, "inbound", params)
    signed_for_internal_url = post_twilio(
        client,
        "inbound",
        {**params, "MessageSid": "SM" + "2" * 32},
        **{
            "X-Twilio-Signature": twilio_signature(
                "http://testserver/webhooks/twilio/inbound/", params, TWILIO_AUTH_TOKEN
            )
        },
    )

    assert ok.status_code == 200
    assert signed_for_internal_url.status_code == 403


@pytest.mark.parametrize(
    ("change", "token"),
    [
        ({}, "wrong-token"),
        ({"AccountSid": "AC" + "9" * 32}, TWILIO_AUTH_TOKEN),
        ({"To": "whatsapp:+19999999999"}, TWILIO_AUTH_TOKEN),
    ],
)
def test_twilio_deliveries_not_signed_by_the_named_channel_are_refused(
    client: Client, twilio_acme: Channel, change, token
) -> None:
    response = post_twilio(
        client, "inbound", {**payload("twilio/inbound_text.json"), **change}, token
    )

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_a_twilio_sender_in_a_messaging_service_pool_is_found_by_the_service(
    client: Client, twilio_acme: Channel
) -> None:
    params = payload("twilio/inbound_messaging_service.json")
    twilio_acme.messaging_service_sid = params["MessagingServiceSid"]
    twilio_acme.save()

    response = post_twilio(client, "inbound", params)

    assert response.status_code == 200
    assert WebhookEvent.objects.get().channel == twilio_acme


def test_a_twilio_status_callback_is_answered_200(client: Client, twilio_acme: Channel) -> None:
    response = post_twilio(client, "status", payload("twilio/status_delivered.json"))

    assert response.status_code == 200
    assert WebhookEvent.objects.get().kind == "statuses"


def test_a_signed_twilio_request_without_a_message_sid_gets_400(
    client: Client, twilio_acme: Channel
) -> None:
    params = {
        k: v
        for k, v in payload("twilio/status_sent.json").items()
        if "Sid" not in k or k == "AccountSid"
    }

    response = post_twilio(client, "status", params)

    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_raw_nul_byte_in_a_twilio_body_gets_400_and_a_percent_encoded_one_is_stored(
    client: Client, twilio_acme: Channel
) -> None:
    params = {**payload("twilio/inbound_text.json"), "Body": "hi\x00there"}
    url = settings.PUBLIC_BASE_URL + "/webhooks/twilio/inbound/"
    signature = twilio_signature(url, params, TWILIO_AUTH_TOKEN)
    raw = urlencode(params).replace("%00", "\x00")

    refused = client.post(
        "/webhooks/twilio/inbound/",
        raw.encode(),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    encoded = post_twilio(client, "inbound", params)

    assert refused.status_code == 400
    assert "NUL" in refused.json()["error"]
    assert encoded.status_code == 200
    assert WebhookEvent.objects.get().body.count("%00") == 1


def test_webhooks_need_no_csrf_token_but_other_posts_do(
    meta_acme: Channel, twilio_acme: Channel
) -> None:
    csrf_client = Client(enforce_csrf_checks=True)

    admin = csrf_client.post("/admin/login/", {"username": "x", "password": "y"})
    meta = post_meta(csrf_client, payload("meta/text.json"))
    twilio = post_twilio(csrf_client, "inbound", payload("twilio/inbound_text.json"))

    assert admin.status_code == 403
    assert (meta.status_code, twilio.status_code) == (200, 200)
