"""Logs are JSON lines with a correlation id that follows a webhook from its request into every
task it causes, in the worker too; phone numbers, message text and secrets never appear."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from conversations.models import MediaAsset
from tests.conftest import Worker, wait_for
from tests.factories import ChannelFactory, OrganizationFactory
from tests.fakes import ProviderState
from tests.webhooks.conftest import META_APP_SECRET, PHONE_NUMBER_ID, WABA_ID, payload, post_meta
from whatsapp_platform.monitoring.logs import HEADER


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the configured console handler writes (settings.LOGGING), captured."""
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_log_lines_are_json_with_numbers_text_and_secrets_redacted(console: io.StringIO) -> None:
    logger = logging.getLogger("whatsapp_platform.tests")
    logger.warning(
        "Send to %s (whatsapp:+4915112345678) with key %s failed",
        "4915112345678",
        "wpk_s3cr3tKeyValue_abc",
        extra={
            "text": "Your parcel #48213 arrives today",
            "to": "+4915112345678",
            "message_id": 42,
        },
    )
    try:
        raise ValueError("Authorization: Bearer EAAGsecretaccesstoken1234567890 for +14155238886")
    except ValueError:
        logger.exception("Provider call failed")

    output = console.getvalue()
    [first, second] = _lines(output)
    assert first["level"] == "WARNING"
    assert first["name"] == "whatsapp_platform.tests"
    assert first["message"] == "Send to [redacted] (whatsapp:[redacted]) with key [redacted] failed"
    assert first["text"] == "[redacted]"
    assert first["to"] == "[redacted]"
    assert first["message_id"] == 42
    assert "correlation_id" in first
    assert "ValueError" in second["exc_info"]
    for secret in ("4915112345678", "wpk_s3cr3t", "parcel", "EAAGsecret", "14155238886"):
        assert secret not in output


@pytest.mark.django_db(transaction=True)
def test_correlation_id_follows_a_webhook_into_the_tasks_it_causes(
    client: Client, celery_worker: Worker, provider_api: ProviderState, console: io.StringIO
) -> None:
    ChannelFactory(
        organization=OrganizationFactory(name="Acme"),
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        app_secret=META_APP_SECRET,
    )
    body = payload("meta/image.json")
    image = body["entry"][0]["changes"][0]["value"]["messages"][0]
    image["id"] = f"wamid.logs-{uuid.uuid4().hex}"
    image["timestamp"] = str(int(time.time()))
    provider_api.media[image["image"]["id"]] = (b"\xff\xd8jpeg", "image/jpeg")
    correlation = f"corr-{uuid.uuid4().hex[:12]}"

    response = post_meta(client, body, **{HEADER: correlation})

    assert response.status_code == 200
    assert response[HEADER] == correlation
    wait_for(lambda: MediaAsset.objects.filter(state=MediaAsset.State.STORED).exists(), 60)

    def worker_lines() -> list[dict[str, Any]]:
        text = celery_worker.log_path.read_text(errors="replace")
        return [line for line in _lines(text) if line.get("correlation_id") == correlation]

    def tasks_logged() -> set[str]:
        return {
            name
            for line in worker_lines()
            for name in ("process_webhook_events", "download_media")
            if name in line["message"] and "succeeded" in line["message"]
        }

    assert wait_for(lambda: tasks_logged() == {"process_webhook_events", "download_media"})
    # The worker's lines redact the customer's number like the web's.
    assert "16315551181" not in celery_worker.log_path.read_text(errors="replace")


@pytest.mark.django_db
def test_a_request_without_an_id_gets_a_new_one_and_a_bad_one_is_replaced(client: Client) -> None:
    first = client.get("/health/")[HEADER]
    second = client.get("/health/")[HEADER]
    assert first != second
    assert len(first) == 36

    replaced = client.get("/health/", headers={HEADER: "bad id\nwith newline"})[HEADER]
    assert replaced != "bad id\nwith newline"
    assert len(replaced) == 36
