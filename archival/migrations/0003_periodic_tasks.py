"""The periodic archival runs, editable in the admin. Their crons come from the environment."""

from django.conf import settings
from django.db import migrations

TASKS = (
    ("archive-messages", "messages", "ARCHIVE_MESSAGES_CRON", "Message archival (every ARCHIVE_EVERY_DAYS days)"),
    ("archive-media", "media", "ARCHIVE_MEDIA_CRON", "Media archival (every ARCHIVE_EVERY_DAYS days)"),
)


def create_periodic_tasks(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, job_type, setting, description in TASKS:
        minute, hour, day_of_month, month_of_year, day_of_week = getattr(settings, setting).split()
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone="UTC",
        )
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": "archival.tasks.run_scheduled_archive",
                "args": f'["{job_type}"]',
                "crontab": crontab,
                "enabled": True,
                "description": description,
            },
        )


def delete_periodic_tasks(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("archival", "0002_archive_batches"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_periodic_tasks, delete_periodic_tasks)]
