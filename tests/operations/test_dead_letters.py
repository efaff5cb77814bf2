"""Dead letters against the local SQS endpoint: listed with their task and error, redriven once,
purged; through the staff API and the command."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from django.test import Client

from tests.celery_tasks import fails_until_allowed
from tests.conftest import Worker, wait_for
from whatsapp_platform.lib.sqs import QueueSetup, queue_attributes
from whatsapp_platform.models import Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def _letters(client: Client, task_id: str) -> list[dict[str, object]]:
    response = client.get("/monitoring/dead-letters/", {"queue": "analytics"})
    assert response.status_code == 200
    return [d for d in response.json()["dead_letters"] if d["task_id"] == task_id]


def _dead_letter(client: Client, marker: str) -> dict[str, object]:
    task_id = fails_until_allowed.delay(marker).id
    letters = wait_for(lambda: _letters(client, task_id), timeout=60)
    assert isinstance(letters, list)
    assert len(letters) == 1
    return letters[0]


def _idle(url: str) -> bool:
    attributes = queue_attributes(url)
    return (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def test_failed_task_is_listed_with_its_name_arguments_and_error(
    staff_client: Client, celery_worker: Worker
) -> None:
    marker = f"listed-{uuid.uuid4().hex[:6]}"

    letter = _dead_letter(staff_client, marker)

    assert letter["task"] == "tests.celery_tasks.fails_until_allowed"
    assert letter["queue"] == "analytics"
    assert marker in str(letter["arguments"])
    assert letter["error"] == "Flaky: not allowed yet"
    assert letter["dead_lettered_by"] == "task"
    # Listing consumes nothing: the letter is there again.
    assert _letters(staff_client, str(letter["task_id"]))
    staff_client.post(
        "/monitoring/dead-letters/purge/",
        {"queue": "analytics", "ids": [letter["id"]]},
        content_type="application/json",
    )


def test_redriven_dead_letter_runs_once_in_its_source_queue(
    staff_client: Client, celery_worker: Worker, sqs_queues: dict[str, QueueSetup]
) -> None:
    marker = f"redrive-{uuid.uuid4().hex[:6]}"
    letter = _dead_letter(staff_client, marker)
    Heartbeat.objects.create(name=f"{marker}-allowed", seen_at="2026-01-01T00:00:00Z")

    response = staff_client.post(
        "/monitoring/dead-letters/redrive/",
        {"queue": "analytics", "ids": [letter["id"]]},
        content_type="application/json",
    )

    assert response.status_code == 200
    assert response.json() == {"count": 1}
    wait_for(lambda: Heartbeat.objects.filter(name__startswith=f"{marker}-run-").exists())
    wait_for(lambda: _idle(sqs_queues["analytics"].url))
    assert Heartbeat.objects.filter(name__startswith=f"{marker}-run-").count() == 1
    assert _letters(staff_client, str(letter["task_id"])) == []


def test_purge_deletes_only_the_chosen_dead_letter(
    staff_client: Client, celery_worker: Worker
) -> None:
    first = _dead_letter(staff_client, f"purge-a-{uuid.uuid4().hex[:6]}")
    second = _dead_letter(staff_client, f"purge-b-{uuid.uuid4().hex[:6]}")

    response = staff_client.post(
        "/monitoring/dead-letters/purge/",
        {"queue": "analytics", "ids": [first["id"]]},
        content_type="application/json",
    )

    assert response.json() == {"count": 1}
    assert _letters(staff_client, str(first["task_id"])) == []
    assert len(_letters(staff_client, str(second["task_id"]))) == 1
    staff_client.post(
        "/monitoring/dead-letters/purge/",
        {"queue": "analytics", "ids": [second["id"]]},
        content_type="application/json",
    )


def test_command_lists_redrives_all_and_purges(
    staff_client: Client, celery_worker: Worker, sqs_queues: dict[str, QueueSetup]
) -> None:
    marker = f"command-{uuid.uuid4().hex[:6]}"
    letter = _dead_letter(staff_client, marker)

    out = io.StringIO()
    call_command("dead_letters", "list", "--queue", "analytics", stdout=out)
    assert str(letter["task_id"]) in out.getvalue()
    assert "Flaky: not allowed yet" in out.getvalue()

    # Redriven while still failing: it is dead-lettered again, once.
    out = io.StringIO()
    call_command("dead_letters", "redrive", "--queue", "analytics", "--all", stdout=out)
    assert "Redrove" in out.getvalue()
    again = wait_for(lambda: _letters(staff_client, str(letter["task_id"])), timeout=60)
    assert isinstance(again, list)
    assert len(again) == 1

    out = io.StringIO()
    call_command(
        "dead_letters", "purge", "--queue", "analytics", "--id", again[0]["id"], stdout=out
    )
    assert out.getvalue().strip() == "Purged 1 dead letter(s)."
    assert _letters(staff_client, str(letter["task_id"])) == []


def test_dead_letter_endpoints_refuse_api_keys_anonymous_and_bad_input(
    client: Client, staff_client: Client, sqs_queues: dict[str, QueueSetup]
) -> None:
    anonymous = Client()
    assert anonymous.get("/monitoring/dead-letters/").status_code in (401, 403)
    assert anonymous.post(
        "/monitoring/dead-letters/purge/", {"all": True}, content_type="application/json"
    ).status_code in (401, 403)

    unknown = staff_client.get("/monitoring/dead-letters/", {"queue": "nope"})
    assert unknown.status_code == 400
    assert "Unknown queue" in unknown.json()["detail"]
    neither = staff_client.post(
        "/monitoring/dead-letters/redrive/", {"queue": "analytics"}, content_type="application/json"
    )
    assert neither.status_code == 400
    assert "ids" in str(neither.json()["errors"])
