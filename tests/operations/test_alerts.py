"""Alerts cross their thresholds and clear again; /monitoring/alerts shows them with their
thresholds, and the beat task logs them."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from archival.models import ArchiveRun
from tests.celery_tasks import fails_until_allowed
from tests.conftest import Worker, wait_for
from tests.factories import ChannelFactory
from whatsapp_platform.lib.sqs import QueueSetup, sqs_client
from whatsapp_platform.models import Organization
from whatsapp_platform.monitoring.dead_letters import dead_letters_purge
from whatsapp_platform.monitoring.tasks import evaluate_alerts

pytestmark = pytest.mark.django_db(transaction=True)


def _alerts(client: Client, name: str) -> list[dict[str, Any]]:
    response = client.get("/monitoring/alerts")
    assert response.status_code == 200
    return [a for a in response.json()["alerts"] if a["name"] == name]


def test_queue_depth_alert_crosses_and_clears(
    staff_client: Client, idle_queue: QueueSetup, settings: Any
) -> None:
    settings.ALERT_QUEUE_DEPTH = 2
    queue = idle_queue.name.removeprefix(settings.SQS_QUEUE_PREFIX)
    sqs = sqs_client()
    for _ in range(2):
        sqs.send_message(QueueUrl=idle_queue.url, MessageBody="x")
    assert [a for a in _alerts(staff_client, "queue_depth") if a["subject"] == queue] == []

    sqs.send_message(QueueUrl=idle_queue.url, MessageBody="x")
    [alert] = [a for a in _alerts(staff_client, "queue_depth") if a["subject"] == queue]
    assert (alert["value"], alert["threshold"]) == (3, 2)
    assert staff_client.get("/monitoring/alerts").json()["thresholds"]["queue_depth"] == 2

    for message in sqs.receive_message(QueueUrl=idle_queue.url, MaxNumberOfMessages=10)["Messages"]:
        sqs.delete_message(QueueUrl=idle_queue.url, ReceiptHandle=message["ReceiptHandle"])
    assert [a for a in _alerts(staff_client, "queue_depth") if a["subject"] == queue] == []


def test_any_dead_letter_is_a_critical_alert(staff_client: Client, idle_queue: QueueSetup) -> None:
    queue = idle_queue.name.removeprefix("test-")
    sqs_client().send_message(QueueUrl=idle_queue.dead_letter_url, MessageBody="x")

    [alert] = [a for a in _alerts(staff_client, "dead_letters") if a["subject"] == queue]

    assert alert["severity"] == "critical"
    assert alert["value"] == 1


def test_task_errors_alert_above_five_in_the_window_and_clears_after_it(
    staff_client: Client, celery_worker: Worker, settings: Any
) -> None:
    marker = f"errors-{uuid.uuid4().hex[:6]}"
    for i in range(5):
        fails_until_allowed.delay(f"{marker}-{i}")
    from whatsapp_platform.monitoring.models import TaskFailure

    wait_for(lambda: TaskFailure.objects.count() >= 5, timeout=60)
    assert _alerts(staff_client, "task_errors") == []

    fails_until_allowed.delay(f"{marker}-5")
    wait_for(lambda: TaskFailure.objects.count() >= 6, timeout=60)
    [alert] = _alerts(staff_client, "task_errors")
    assert alert["value"] == 6
    assert alert["threshold"] == 5

    settings.ALERT_TASK_ERRORS_WINDOW_SECONDS = 1
    time.sleep(1.5)
    assert _alerts(staff_client, "task_errors") == []
    dead_letters_purge(queue="analytics")


def test_failed_or_slow_archival_alerts_until_a_good_run(staff_client: Client) -> None:
    now = timezone.now()
    ArchiveRun.objects.create(
        job_type="messages", triggered_by="schedule", state="failed", started_at=now
    )
    [failed] = _alerts(staff_client, "archive_failed")
    assert "failed" in failed["message"]

    ArchiveRun.objects.create(
        job_type="messages",
        triggered_by="schedule",
        state="running",
        started_at=now - timedelta(minutes=11),
    )
    assert _alerts(staff_client, "archive_failed") == []
    [slow] = _alerts(staff_client, "archive_slow")
    assert slow["threshold"] == 600
    assert slow["value"] > 600

    ArchiveRun.objects.create(
        job_type="messages",
        triggered_by="schedule",
        state="succeeded",
        started_at=now - timedelta(minutes=2),
        finished_at=now,
    )
    assert _alerts(staff_client, "archive_slow") == []


def test_channel_with_a_credential_error_alerts_until_fixed(
    staff_client: Client, organization: Organization
) -> None:
    channel = ChannelFactory(organization=organization, credential_error="(#190) token expired")

    [alert] = _alerts(staff_client, "channel_credentials")
    assert alert["subject"] == f"channel {channel.pk}"
    assert "token" not in alert["message"]

    channel.credential_error = ""
    channel.save(update_fields=["credential_error"])
    assert _alerts(staff_client, "channel_credentials") == []


def test_sqs_down_is_an_alert(staff_client: Client, broker_proxy: Any, sqs_queues: Any) -> None:
    with broker_proxy.down():
        names = [a["name"] for a in staff_client.get("/monitoring/alerts").json()["alerts"]]
    assert "broker_unreachable" in names


def test_beat_task_logs_active_alerts_and_samples_queues(
    organization: Organization, sqs_queues: dict[str, QueueSetup], caplog: Any
) -> None:
    from whatsapp_platform.monitoring.models import QueueSample

    ChannelFactory(organization=organization, credential_error="invalid token")

    with caplog.at_level(logging.WARNING, logger="whatsapp_platform.monitoring"):
        evaluate_alerts()

    assert any("Alert channel_credentials" in r.getMessage() for r in caplog.records)
    assert set(QueueSample.objects.values_list("queue", flat=True)) >= {"incoming", "outgoing"}
