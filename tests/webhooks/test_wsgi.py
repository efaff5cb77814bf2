"""The deployed WSGI application: webhooks through their short middleware chain, browser pages
through the full one."""

from __future__ import annotations

import io
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from tests.webhooks.conftest import META_APP_SECRET, meta_wire, payload
from webhooks.dispatch import dispatcher
from webhooks.models import WebhookEvent
from webhooks.signature import meta_signature
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.models import Channel
from whatsapp_platform.wsgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def call(method: str, path: str, body: bytes = b"", **extra: str) -> tuple[str, dict[str, str]]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **extra,
    }
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer.update(status=status, headers=headers)

    content = application(environ, start_response)
    try:
        b"".join(content)
    finally:
        content.close()  # type: ignore[attr-defined]
    return answer["status"], {name.lower(): value for name, value in answer["headers"]}


def post_signed(body: bytes, **extra: str) -> tuple[str, dict[str, str]]:
    return call(
        "POST",
        "/webhooks/meta/",
        body,
        CONTENT_TYPE="application/json",
        HTTP_X_HUB_SIGNATURE_256=meta_signature(body, META_APP_SECRET),
        **extra,
    )


def test_a_signed_delivery_is_stored_queued_and_answered_with_its_correlation_id(
    meta_acme: Channel, sqs_queues: dict[str, QueueSetup]
) -> None:
    status, headers = post_signed(meta_wire(payload("meta/text.json")))

    assert status == "200 OK"
    assert headers["x-correlation-id"]
    assert headers["content-length"] == "2"
    assert WebhookEvent.objects.get().organization_id == meta_acme.organization_id
    assert dispatcher.wait_idle()
    assert WebhookEvent.objects.get().state == "queued"  # the broker took it


def test_a_webhook_for_a_host_not_allowed_gets_400_and_is_not_stored(meta_acme: Channel) -> None:
    status, _ = post_signed(meta_wire(payload("meta/text.json")), HTTP_HOST="evil.example")

    assert status.startswith("400")
    assert not WebhookEvent.objects.exists()


def test_browser_pages_keep_csrf_and_frame_protection() -> None:
    status, headers = call("GET", "/admin/login/")

    assert status == "200 OK"
    assert headers["x-frame-options"] == "DENY"
    assert "csrftoken=" in headers["set-cookie"]
