"""`setup_queues` gives every queue its own dead-letter queue, and can run again safely."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from whatsapp_platform.lib.sqs import QueueSetup, queue_attributes


def test_every_queue_has_a_dead_letter_queue_and_running_again_changes_nothing(
    sqs_queues: dict[str, QueueSetup], settings
) -> None:
    out = io.StringIO()

    call_command("setup_queues", stdout=out)
    call_command("setup_queues", stdout=out)

    assert set(sqs_queues) == set(settings.WORK_QUEUES)
    assert out.getvalue().count("updated") == 2 * len(settings.WORK_QUEUES)
    for queue in sqs_queues.values():
        attributes = queue_attributes(queue.url)
        dead_letters = queue_attributes(queue.dead_letter_url)
        policy = json.loads(attributes["RedrivePolicy"])
        assert policy["deadLetterTargetArn"] == dead_letters["QueueArn"]
        assert int(policy["maxReceiveCount"]) == settings.SQS_MAX_RECEIVE_COUNT
        assert attributes["VisibilityTimeout"] == str(settings.SQS_VISIBILITY_TIMEOUT)
        assert dead_letters["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_it_explains_itself_without_sqs(settings) -> None:
    settings.CELERY_BROKER_URL = "filesystem://"

    with pytest.raises(CommandError, match="not sqs://"):
        call_command("setup_queues")
