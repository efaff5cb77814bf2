"""System checks: configuration that would fail later, reported at start-up."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def check_celery_timing(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.CELERY_TASK_TIME_LIMIT >= settings.SQS_VISIBILITY_TIMEOUT:
        errors.append(
            Error(
                "CELERY_TASK_TIME_LIMIT must be below SQS_VISIBILITY_TIMEOUT, or SQS hands a "
                "running task to a second worker.",
                id="whatsapp_platform.E001",
            )
        )
    if settings.CELERY_TASK_SOFT_TIME_LIMIT >= settings.CELERY_TASK_TIME_LIMIT:
        errors.append(
            Error(
                "CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT.",
                id="whatsapp_platform.E002",
            )
        )
    if settings.CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT >= settings.SQS_VISIBILITY_TIMEOUT:
        errors.append(
            Error(
                "CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT must be below SQS_VISIBILITY_TIMEOUT, or SQS "
                "hands a running audience import to a second worker.",
                id="whatsapp_platform.E003",
            )
        )
    return errors


@register(Tags.security, deploy=True)
def check_production_services(app_configs: Any, **kwargs: Any) -> list[Warning]:
    warnings = []
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        warnings.append(
            Warning(
                "CELERY_BROKER_URL is the filesystem broker, which serves one machine only.",
                hint="Set CELERY_BROKER_URL=sqs:// in production.",
                id="whatsapp_platform.W001",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        warnings.append(
            Warning(
                "DATABASE_URL is SQLite, which serves one machine only.",
                hint="Set DATABASE_URL=postgres://... in production.",
                id="whatsapp_platform.W002",
            )
        )
    if not settings.ARCHIVE_S3_BUCKET:
        warnings.append(
            Warning(
                "Archives go to a local folder.",
                hint="Set ARCHIVE_S3_BUCKET in production.",
                id="whatsapp_platform.W003",
            )
        )
    return warnings
