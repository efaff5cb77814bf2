"""/monitoring/metrics after real traffic: webhooks posted to gunicorn with two worker processes,
processed and answered by the real Celery worker; sums are right whichever process counted."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from conversations.models import Message
from tests.conftest import BIN, ROOT, Worker, _database_url, wait_for
from tests.factories import ChannelFactory, OrganizationFactory
from tests.fakes import ProviderState
from tests.webhooks.conftest import META_APP_SECRET, PHONE_NUMBER_ID, WABA_ID, meta_wire, payload
from webhooks.models import WebhookEvent
from webhooks.signature import meta_signature
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "scrape-token-for-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn(sqs_queues: dict[str, QueueSetup]) -> Iterator[str]:
    """The platform under gunicorn, two worker processes, on the test database."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CONN_MAX_AGE": "0",
        "SQS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ['TEST_AWS_PORT']}",
        "METRICS_TOKEN": TOKEN,
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-c",
            "deploy/gunicorn.conf.py",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "whatsapp_platform.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health/", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=60)
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as error:
        return error


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = _request(f"{url}/monitoring/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.read().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _inbound(message_id: str) -> bytes:
    body = copy.deepcopy(payload("meta/text.json"))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["id"] = message_id
    message["timestamp"] = str(int(time.time()))
    return meta_wire(body)


def test_metrics_count_traffic_of_every_web_and_worker_process(
    gunicorn: str, celery_worker: Worker, provider_api: ProviderState
) -> None:
    channel = ChannelFactory(
        organization=OrganizationFactory(name="Acme"),
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        app_secret=META_APP_SECRET,
    )
    _, raw_key = api_key_create(organization=channel.organization, name="CRM")
    before = _scrape(gunicorn)

    for i in range(6):
        body = _inbound(f"wamid.metrics-{time.time_ns()}-{i}")
        response = _request(
            f"{gunicorn}/webhooks/meta/",
            body,
            {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": meta_signature(body, META_APP_SECRET),
            },
        )
        assert response.status == 200
    forged = _request(
        f"{gunicorn}/webhooks/meta/",
        _inbound("wamid.forged"),
        {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64},
    )
    assert forged.status == 403
    wait_for(
        lambda: WebhookEvent.objects.filter(state=WebhookEvent.State.PROCESSED).count() == 6,
        timeout=60,
    )
    sent = _request(
        f"{gunicorn}/api/messaging/send/",
        json.dumps({"to": "+16315551181", "type": "text", "text": {"body": "On its way"}}).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {raw_key}"},
    )
    assert sent.status == 202, sent.read()
    wait_for(lambda: Message.objects.filter(status=Message.Status.SENT).exists(), timeout=60)

    # Every scrape, whichever gunicorn worker answers it, shows the same sums.
    scrapes = [_scrape(gunicorn) for _ in range(4)]
    for after in scrapes:
        accepted = _value(after, "webhooks_received_total", provider="meta", result="accepted")
        assert (
            accepted - _value(before, "webhooks_received_total", provider="meta", result="accepted")
            == 6
        )
        refused = _value(
            after, "webhooks_received_total", provider="meta", result="invalid_signature"
        )
        assert (
            refused
            - _value(before, "webhooks_received_total", provider="meta", result="invalid_signature")
            == 1
        )
        # Counted in the Celery worker's pool processes.
        processed = _value(after, "webhook_processing_seconds_count", provider="meta")
        assert processed - _value(before, "webhook_processing_seconds_count", provider="meta") == 6
        sends = _value(after, "message_sends_total", status="sent", error_code="")
        assert sends - _value(before, "message_sends_total", status="sent", error_code="") == 1
        assert _value(after, "sqs_up") == 1
        assert ("queue_messages", (("queue", "incoming"), ("state", "visible"))) in after
        assert ("dead_letter_messages", (("queue", "outgoing"),)) in after


def test_metrics_need_the_bearer_token_when_one_is_set(gunicorn: str) -> None:
    assert _request(f"{gunicorn}/monitoring/metrics").status == 401
    wrong = _request(f"{gunicorn}/monitoring/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert json.loads(wrong.read())["error"]
    assert _request(f"{gunicorn}/monitoring/summary").status == 401
    assert _request(f"{gunicorn}/monitoring/alerts").status == 401
    good = _request(f"{gunicorn}/monitoring/alerts", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status == 200


def test_a_superusers_session_reads_summary_with_queues_campaigns_and_alerts(
    staff_client: Client, sqs_queues: dict[str, QueueSetup], settings: Any
) -> None:
    settings.METRICS_TOKEN = TOKEN

    response = staff_client.get("/monitoring/summary")

    assert response.status_code == 200
    body = response.json()
    assert set(body["queues"]) >= {"incoming", "outgoing", "ai", "archival", "analytics"}
    assert {"webhooks_last_hour", "sends_last_hour", "campaigns", "archival", "alerts"} <= set(body)


def test_metrics_report_sqs_down_instead_of_failing(
    client: Client, broker_proxy: Any, sqs_queues: dict[str, QueueSetup]
) -> None:
    with broker_proxy.down():
        response = client.get("/monitoring/metrics")

    assert response.status_code == 200
    assert b"sqs_up 0.0" in response.content


def test_without_a_token_metrics_are_open_but_summary_and_alerts_need_a_superuser(
    client: Client, sqs_queues: dict[str, QueueSetup], settings: Any
) -> None:
    settings.METRICS_TOKEN = ""

    assert client.get("/monitoring/metrics").status_code == 200
    for path in ("/monitoring/summary", "/monitoring/alerts"):
        response = client.get(path)
        assert response.status_code == 401
        assert "superuser" in response.json()["error"]
