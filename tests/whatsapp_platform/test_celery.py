"""Tasks cross a real SQS-compatible queue into a real worker, and failures end in dead letters."""

from __future__ import annotations

import pytest

from tests.celery_tasks import always_fails, kills_its_worker
from tests.conftest import Worker, wait_for
from whatsapp_platform.lib.sqs import (
    QueueSetup,
    decode_task_message,
    queue_attributes,
    sqs_client,
)
from whatsapp_platform.models import Heartbeat
from whatsapp_platform.tasks import record_heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def _queue_is_empty(url: str) -> bool:
    attributes = queue_attributes(url)
    return (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
        and attributes["ApproximateNumberOfMessagesDelayed"] == "0"
    )


def _take_dead_letters(dlq_url: str, task_id: str) -> list[dict[str, object]]:
    """Receive (and delete) the dead letters of one task from a dead-letter queue."""
    client = sqs_client()
    found = []
    for message in client.receive_message(
        QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", []):
        decoded = decode_task_message(message["Body"])
        if decoded.task_id == task_id:
            found.append({"message": decoded, "attributes": message})
            client.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        else:
            client.change_message_visibility(
                QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return found


def test_task_sent_through_sqs_runs_in_worker_and_its_write_is_in_the_database(
    celery_worker: Worker, sqs_queues: dict[str, QueueSetup]
) -> None:
    record_heartbeat.delay("round-trip")

    heartbeat = wait_for(lambda: Heartbeat.objects.filter(name="round-trip").first())

    assert heartbeat
    wait_for(lambda: _queue_is_empty(sqs_queues["analytics"].url))


def test_task_failing_after_its_retries_is_dead_lettered_once_with_its_error(
    celery_worker: Worker, sqs_queues: dict[str, QueueSetup]
) -> None:
    result = always_fails.delay("provider-down")

    dead = wait_for(
        lambda: _take_dead_letters(sqs_queues["analytics"].dead_letter_url, result.id), 40
    )

    assert isinstance(dead, list)
    assert len(dead) == 1
    message = dead[0]["message"]
    assert message.task == "tests.celery_tasks.always_fails"  # type: ignore[attr-defined]
    assert message.args == ["provider-down"]  # type: ignore[attr-defined]
    letter = message.headers["dead_letter"]  # type: ignore[attr-defined]
    assert letter["source_queue"] == "analytics"
    assert letter["error"] == "Flaky: the provider is down"
    assert letter["retries"] == 1
    # The first run and its one retry; the dead letter is not run again.
    attempts = set(
        Heartbeat.objects.filter(name__startswith="provider-down").values_list("name", flat=True)
    )
    assert attempts == {"provider-down-attempt-0", "provider-down-attempt-1"}
    wait_for(lambda: _queue_is_empty(sqs_queues["analytics"].url))


def test_task_that_crashes_its_worker_moves_to_dead_letters_after_max_receives(
    celery_worker: Worker, sqs_queues: dict[str, QueueSetup]
) -> None:
    result = kills_its_worker.delay("poison")

    dead = wait_for(
        lambda: _take_dead_letters(sqs_queues["analytics"].dead_letter_url, result.id), 60
    )

    assert isinstance(dead, list)
    assert len(dead) == 1
    # SQS_MAX_RECEIVE_COUNT=2 in the tests: two deliveries, then the redrive policy.
    assert Heartbeat.objects.filter(name__startswith="poison-").count() == 2


def test_a_delay_longer_than_sqs_allows_is_shortened_and_the_task_runs_once(
    celery_worker: Worker, settings
) -> None:
    # The tests run SQS with a 30 s visibility timeout, so delays are capped at 15 s.
    assert settings.TASK_MAX_COUNTDOWN == 15

    record_heartbeat.apply_async(args=("delayed",), countdown=24 * 3600)

    heartbeat = wait_for(lambda: Heartbeat.objects.filter(name="delayed").first(), 40)
    assert isinstance(heartbeat, Heartbeat)
