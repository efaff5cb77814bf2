"""The staff archival API, the periodic tasks and their toggles."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_celery_beat.models import PeriodicTask

from archival.models import ArchiveRun
from archival.schedule import next_runs
from conversations.models import Message
from tests.archival.conftest import messages_job_free, old_messages
from tests.conftest import wait_for
from whatsapp_platform.lib.storage import ArchiveStorage
from whatsapp_platform.services import api_key_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("periodic_tasks")]

ENDPOINTS = (
    ("post", "/api/admin/archival/trigger?job_type=messages&dry_run=true"),
    ("get", "/api/admin/archival/status"),
    ("get", "/api/admin/archival/logs/messages"),
    ("get", "/api/admin/archival/logs/media"),
    ("get", "/api/admin/archival/metrics"),
    ("post", "/api/admin/archival/schedule/toggle/messages"),
    ("post", "/api/admin/archival/schedule/toggle/media"),
    ("post", "/api/admin/archival/erase-contact"),
)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_the_admin_api_refuses_anyone_but_staff(
    client: Client, organization: Any, method: str, path: str
) -> None:
    _, raw_key = api_key_create(organization=organization, name="CRM")
    anonymous = getattr(client, method)(path)
    with_key = getattr(client, method)(path, headers={"Authorization": f"Bearer {raw_key}"})
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=False)
    client.force_login(user)
    not_staff = getattr(client, method)(path)

    assert anonymous.status_code in (401, 403)
    assert with_key.status_code == 403
    assert not_staff.status_code == 403
    assert not ArchiveRun.objects.exists()
    assert PeriodicTask.objects.filter(name__startswith="archive-", enabled=False).count() == 0


def test_the_periodic_tasks_run_every_two_days_at_their_hours_across_month_ends() -> None:
    messages = PeriodicTask.objects.get(name="archive-messages")
    media = PeriodicTask.objects.get(name="archive-media")

    for task, hour in ((messages, "2"), (media, "3")):
        assert task.enabled
        assert task.task == "archival.tasks.run_scheduled_archive"
        assert task.crontab is not None
        assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_month) == (
            "0",
            hour,
            "*",
        )
        assert str(task.crontab.timezone) == "UTC"
    assert messages.args == '["messages"]'

    runs = next_runs("messages", now=datetime(2027, 1, 26, 12, tzinfo=UTC), count=6)
    assert [b - a for a, b in itertools.pairwise(runs)] == [timedelta(hours=48)] * 5
    assert all(run.hour == 2 and run.minute == 0 for run in runs)
    # Across January's 31 days, no run on both the 31st and the 1st.
    days = [run.date().isoformat() for run in runs]
    assert not ("2027-01-31" in days and "2027-02-01" in days)
    media_runs = next_runs("media", now=datetime(2027, 1, 26, 12, tzinfo=UTC), count=2)
    assert [run.hour for run in media_runs] == [3, 3]
    assert media_runs[0].date() == runs[0].date()


def test_staff_toggle_a_schedule_and_see_it_in_the_status(staff_client: Client) -> None:
    off = staff_client.post("/api/admin/archival/schedule/toggle/messages")
    status = staff_client.get("/api/admin/archival/status").json()

    assert off.status_code == 200
    assert off.json() == {"job": "messages", "enabled": False}
    assert PeriodicTask.objects.get(name="archive-messages").enabled is False
    assert status["jobs"]["messages"]["enabled"] is False
    assert status["jobs"]["messages"]["next_run_at"] is None
    assert status["jobs"]["media"]["enabled"] is True
    assert status["jobs"]["media"]["next_run_at"].endswith("03:00:00+00:00")

    on = staff_client.post("/api/admin/archival/schedule/toggle/messages")
    assert on.json()["enabled"] is True
    assert staff_client.post("/api/admin/archival/schedule/toggle/other").status_code == 404


def test_a_trigger_with_bad_parameters_is_a_400(staff_client: Client) -> None:
    bad_job = staff_client.post("/api/admin/archival/trigger?job_type=everything")
    bad_flag = staff_client.post("/api/admin/archival/trigger?job_type=media&dry_run=maybe")

    assert bad_job.status_code == 400
    assert "job_type" in bad_job.json()["errors"]
    assert bad_flag.status_code == 400
    assert not ArchiveRun.objects.exists()


def test_a_trigger_while_a_run_is_under_way_is_a_409(
    staff_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = staff_client.post("/api/admin/archival/trigger?job_type=both&dry_run=true")
        again = staff_client.post("/api/admin/archival/trigger?job_type=messages")

    assert first.status_code == 202
    runs = first.json()["runs"]
    assert set(runs) == {"messages", "media"}
    assert len(callbacks) == 2  # one task each, sent once committed
    assert again.status_code == 409
    assert again.json()["running"] == {"messages": runs["messages"]}
    assert ArchiveRun.objects.get(id=runs["messages"]).dry_run is True


def test_logs_and_metrics_report_runs(
    staff_client: Client, local_storage: ArchiveStorage, org_channel: Any
) -> None:
    from io import StringIO

    from django.core.management import call_command

    old_messages(org_channel, 3, days=100)
    call_command("archive_messages", stdout=StringIO())

    logs = staff_client.get("/api/admin/archival/logs/messages").json()
    metrics = staff_client.get("/api/admin/archival/metrics").json()

    (run,) = logs["runs"]
    assert run["state"] == "succeeded"
    assert run["rows_archived"] == 3
    assert run["duration_seconds"] is not None
    assert metrics["totals"]["messages"]["rows"] == 3
    assert metrics["totals"]["messages"]["objects"] == 2
    assert metrics["totals"]["messages"]["bytes"] > 0
    assert staff_client.get("/api/admin/archival/logs/media").json()["runs"] == []
    assert staff_client.get("/api/admin/archival/logs/nope").status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_a_triggered_run_is_done_by_the_worker_on_the_archival_queue(
    staff_client: Client, org_channel: Any, aws_endpoint: str, settings: Any
) -> None:
    # The worker uses the session's S3 bucket, as configured for the whole test run.
    from tests.archival.conftest import empty_bucket

    empty_bucket(aws_endpoint, "test-archive")
    messages = old_messages(org_channel, 3, days=100)

    response = staff_client.post("/api/admin/archival/trigger?job_type=messages&dry_run=false")

    assert response.status_code == 202
    run_id = response.json()["runs"]["messages"]
    wait_for(
        lambda: ArchiveRun.objects.filter(id=run_id, state__in=("succeeded", "failed")).exists(),
        timeout=60,
    )
    run = ArchiveRun.objects.get(id=run_id)
    assert (run.state, run.rows_archived) == ("succeeded", 3)
    assert not Message.objects.filter(id__in=[m.id for m in messages]).exists()
    wait_for(messages_job_free, timeout=30)  # the worker is done with the run, not just its record


def test_archive_days_alternate_through_month_and_year_ends() -> None:
    from datetime import date

    from archival.schedule import is_archive_day

    start = date(2027, 1, 1)
    flags = [is_archive_day(start + timedelta(days=n)) for n in range(800)]

    assert all(a != b for a, b in itertools.pairwise(flags))
    assert not (is_archive_day(date(2027, 1, 31)) and is_archive_day(date(2027, 2, 1)))
    assert not (is_archive_day(date(2028, 2, 29)) and is_archive_day(date(2028, 3, 1)))


def test_a_scheduled_start_while_a_run_is_active_resumes_that_run(
    django_capture_on_commit_callbacks: Any,
) -> None:
    from archival.services import archive_run_create, archive_run_resume_or_trigger

    active = archive_run_create(job_type="messages", triggered_by="api")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        resumed = archive_run_resume_or_trigger(job_type="messages")

    assert resumed.id == active.id
    assert len(callbacks) == 1  # its task is sent again; the lock keeps it from running twice
    assert ArchiveRun.objects.filter(job_type="messages").count() == 1
