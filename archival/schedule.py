"""The periodic archival runs: message archival at 02:00 UTC and media at 03:00, every 2 days.

"Every two days" must stay 48 hours apart across month ends. A cron `*/2` day-of-month fires on
the 31st and again on the 1st; an interval of two days from a start time drifts by beat's tick
delay and re-anchors itself when the task is disabled and enabled again. So each job is a daily
crontab (editable in the admin) whose task acts only on days whose number since 1970-01-01 is a
multiple of ARCHIVE_EVERY_DAYS: the same days every year, whatever the month lengths.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django_celery_beat.models import PeriodicTask

EPOCH = date(1970, 1, 1)
TASK = "archival.tasks.run_scheduled_archive"
PERIODIC_TASK_NAMES = {"messages": "archive-messages", "media": "archive-media"}


def is_archive_day(day: date) -> bool:
    every: int = settings.ARCHIVE_EVERY_DAYS
    return (day - EPOCH).days % every == 0


def periodic_task(job_type: str) -> PeriodicTask | None:
    task: PeriodicTask | None = (
        PeriodicTask.objects.select_related("crontab")
        .filter(name=PERIODIC_TASK_NAMES[job_type])
        .first()
    )
    return task


def next_runs(job_type: str, *, now: datetime | None = None, count: int = 1) -> list[datetime]:
    """The next times the job will really run (its cron, on archive days only), in UTC."""
    task = periodic_task(job_type)
    if task is None or not task.enabled or task.crontab is None:
        return []
    cron: Any = task.crontab.schedule  # celery's crontab: its fields as sets of numbers
    now = (now or datetime.now(UTC)).astimezone(UTC)
    found: list[datetime] = []
    for offset in range(800):
        day = now.date() + timedelta(days=offset)
        if not (
            is_archive_day(day)
            and day.day in cron.day_of_month
            and day.month in cron.month_of_year
            and (day.isoweekday() % 7) in cron.day_of_week  # cron counts Sunday as 0
        ):
            continue
        for hour in sorted(cron.hour):
            for minute in sorted(cron.minute):
                fire = datetime.combine(day, time(hour, minute), tzinfo=UTC)
                if fire > now:
                    found.append(fire)
                    if len(found) == count:
                        return found
    return found


def schedule_toggle(job_type: str) -> bool:
    """Enable or disable a job's periodic run; returns whether it is now enabled."""
    task = periodic_task(job_type)
    if task is None:
        raise LookupError(f"No periodic task for {job_type} archival.")
    task.enabled = not task.enabled
    task.save()  # through save(), so that beat's change tracking sees it
    return bool(task.enabled)
