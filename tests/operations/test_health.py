"""Health endpoints answer 200 when their dependencies answer, and 503 saying what failed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import Worker, wait_for
from tests.fakes import TcpProxy
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.models import Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def test_liveness_answers_without_checking_anything(client: Client) -> None:
    response = client.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_broker_and_storage_answer(
    client: Client, sqs_queues: dict[str, QueueSetup]
) -> None:
    response = client.get("/health/ready/")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {
        "database",
        "broker",
        "storage",
    }


def test_ready_fails_with_503_naming_the_broker_when_sqs_is_down(
    client: Client, broker_proxy: TcpProxy, sqs_queues: dict[str, QueueSetup]
) -> None:
    with broker_proxy.down():
        response = client.get("/health/ready/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "failing"
    assert body["failed"] == ["broker"]
    assert "SQS unreachable" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_ready_fails_when_the_archive_bucket_is_missing(
    client: Client, sqs_queues: dict[str, QueueSetup], settings: Any
) -> None:
    settings.ARCHIVE_S3_BUCKET = "no-such-bucket"

    response = client.get("/health/ready/")

    assert response.status_code == 503
    assert response.json()["failed"] == ["storage"]


def test_sqs_shows_each_queue_with_its_dead_letter_depth(
    client: Client, idle_queue: QueueSetup
) -> None:
    from whatsapp_platform.lib.sqs import sqs_client

    sqs = sqs_client()
    for _ in range(3):
        sqs.send_message(QueueUrl=idle_queue.url, MessageBody="x")
    sqs.send_message(QueueUrl=idle_queue.url, MessageBody="later", DelaySeconds=60)
    sqs.send_message(QueueUrl=idle_queue.dead_letter_url, MessageBody="dead")

    response = client.get("/health/sqs/")

    assert response.status_code == 200
    queues = response.json()["queues"]
    assert set(queues) >= {"incoming", "outgoing", "ai", "archival", "analytics"}
    idle = queues[idle_queue.name.removeprefix("test-")]
    assert (idle["visible"], idle["delayed"], idle["dead_letters"]) == (3, 1, 1)


def test_sqs_answers_503_when_sqs_is_down(
    client: Client, broker_proxy: TcpProxy, sqs_queues: dict[str, QueueSetup]
) -> None:
    with broker_proxy.down():
        response = client.get("/health/sqs/")

    assert response.status_code == 503
    assert response.json()["failed"] == ["sqs"]
    assert response.json()["error"]


def test_workers_lists_live_workers_with_their_queues_and_beat(
    client: Client, celery_worker: Worker
) -> None:
    Heartbeat.objects.create(name="beat", seen_at=timezone.now())

    # The worker records its heartbeats every WORKER_HEARTBEAT_SECONDS.
    response = wait_for(lambda: (r := client.get("/health/workers/")).status_code == 200 and r)

    body = response.json()  # type: ignore[attr-defined]
    assert body["queues_without_worker"] == []
    assert body["beat"]["alive"] is True
    worker = body["workers"][0]
    assert worker["hostname"].startswith("celery@")
    assert worker["queues"] == sorted(["incoming", "outgoing", "ai", "archival", "analytics"])


def test_workers_answers_503_when_beat_is_silent_and_no_worker_answers(client: Client) -> None:
    stale = timezone.now() - timedelta(hours=1)
    Heartbeat.objects.create(name="beat", seen_at=stale)
    Heartbeat.objects.create(name="worker:celery@gone:incoming", seen_at=stale)

    response = client.get("/health/workers/")

    assert response.status_code == 503
    body = response.json()
    assert body["beat"]["alive"] is False
    assert "incoming" in body["queues_without_worker"]
    assert body["workers"] == []
    assert any("beat" in failure for failure in body["failed"])
