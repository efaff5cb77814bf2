"""Health checks, alerts and the operations summary: what views, the beat task and the
dashboard call."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from whatsapp_platform.models import Channel, Heartbeat
from whatsapp_platform.monitoring import metrics
from whatsapp_platform.monitoring.queues import QueueDepth, QueuesUnavailable, queue_depths
from whatsapp_platform.monitoring.signals import HEARTBEAT_PREFIX

logger = logging.getLogger(__name__)


def task_failure_record(*, task: str, task_id: str, queue: str, kind: str, error: str) -> None:
    """Count a task run that raised; never fails the caller (the database may be what broke)."""
    from whatsapp_platform.monitoring.models import TaskFailure

    metrics.task_failures.labels(task=task, kind=kind).inc()
    try:
        TaskFailure.objects.create(
            task=task[:200], task_id=task_id[:64], queue=queue[:100], kind=kind, error=error[:200]
        )
    except Exception:
        logger.warning("Could not record a %s of task %s", kind, task)


# --- Health ---------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return Check(False, {"error": type(exc).__name__})
    return Check(True)


def check_broker() -> Check:
    url = settings.CELERY_BROKER_URL
    if url.startswith("sqs"):
        try:
            from whatsapp_platform.monitoring.queues import monitoring_sqs_client

            client = monitoring_sqs_client()
            from whatsapp_platform.lib.sqs import queue_name

            for queue in settings.WORK_QUEUES:
                client.get_queue_url(QueueName=queue_name(queue))
        except Exception as exc:
            return Check(False, {"error": f"SQS unreachable: {type(exc).__name__}"})
        return Check(True, {"transport": "sqs"})
    if url.startswith("filesystem"):
        from pathlib import Path

        folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
        if not folder.is_dir():
            return Check(False, {"error": "the broker folder is missing"})
        return Check(True, {"transport": "filesystem"})
    from whatsapp_platform.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        return Check(False, {"error": type(exc).__name__})
    return Check(True)


def check_storage() -> Check:
    from whatsapp_platform.lib.storage import S3Storage, archive_storage

    storage = archive_storage()
    try:
        if isinstance(storage, S3Storage):
            storage.client.head_bucket(Bucket=storage.bucket)
        else:
            settings.ARCHIVE_LOCAL_DIR.mkdir(parents=True, exist_ok=True)
            probe = settings.ARCHIVE_LOCAL_DIR / ".health"
            probe.write_bytes(b"")
    except Exception as exc:
        return Check(False, {"error": f"archive storage unreachable: {type(exc).__name__}"})
    return Check(True)


def health_ready() -> dict[str, Check]:
    return {"database": check_database(), "broker": check_broker(), "storage": check_storage()}


def health_queues() -> tuple[bool, dict[str, Any]]:
    try:
        depths = queue_depths()
    except QueuesUnavailable as exc:
        return False, {"error": str(exc)}
    return True, {"queues": {d.queue: d.as_dict() for d in depths}}


def health_workers() -> tuple[bool, dict[str, Any]]:
    """Workers whose heartbeat is recent, the queues they consume, and whether beat is alive."""
    now = timezone.now()
    fresh_after = now - timedelta(seconds=3 * settings.WORKER_HEARTBEAT_SECONDS)
    workers: dict[str, dict[str, Any]] = {}
    for beat in Heartbeat.objects.filter(
        name__startswith=HEARTBEAT_PREFIX, seen_at__gte=fresh_after
    ):
        hostname, _, queue = beat.name.removeprefix(HEARTBEAT_PREFIX).rpartition(":")
        worker = workers.setdefault(hostname, {"queues": [], "seen_at": beat.seen_at})
        worker["queues"].append(queue)
        worker["seen_at"] = max(worker["seen_at"], beat.seen_at)
    covered = {queue for worker in workers.values() for queue in worker["queues"]}
    missing = [queue for queue in settings.WORK_QUEUES if queue not in covered]
    beat_row = Heartbeat.objects.filter(name="beat").first()
    beat_age = (now - beat_row.seen_at).total_seconds() if beat_row else None
    beat_alive = beat_age is not None and beat_age <= settings.BEAT_HEARTBEAT_STALE_SECONDS
    failures = []
    if missing:
        failures.append(f"no live worker consumes: {', '.join(missing)}")
    if not beat_alive:
        failures.append("beat has sent no heartbeat recently")
    body: dict[str, Any] = {
        "workers": [
            {"hostname": name, "queues": sorted(w["queues"]), "seen_at": w["seen_at"].isoformat()}
            for name, w in sorted(workers.items())
        ],
        "queues_without_worker": missing,
        "beat": {
            "alive": beat_alive,
            "seen_at": beat_row.seen_at.isoformat() if beat_row else None,
            "age_seconds": round(beat_age, 1) if beat_age is not None else None,
        },
    }
    if failures:
        body["failed"] = failures
    return not failures, body


# --- Alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # "warning" or "critical"
    message: str
    value: float
    threshold: float
    subject: str = ""  # the queue, channel or job it concerns

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def thresholds() -> dict[str, int]:
    return {
        "queue_depth": settings.ALERT_QUEUE_DEPTH,
        "dead_letters": settings.ALERT_DEAD_LETTERS,
        "task_errors": settings.ALERT_TASK_ERRORS,
        "task_errors_window_seconds": settings.ALERT_TASK_ERRORS_WINDOW_SECONDS,
        "archive_max_seconds": settings.ALERT_ARCHIVE_MAX_SECONDS,
    }


def _queue_alerts(depths: list[QueueDepth]) -> list[Alert]:
    alerts = []
    for depth in depths:
        if depth.visible > settings.ALERT_QUEUE_DEPTH:
            alerts.append(
                Alert(
                    "queue_depth",
                    "warning",
                    f"{depth.visible} messages wait in queue {depth.queue}",
                    depth.visible,
                    settings.ALERT_QUEUE_DEPTH,
                    depth.queue,
                )
            )
        if depth.dead_letters > settings.ALERT_DEAD_LETTERS:
            alerts.append(
                Alert(
                    "dead_letters",
                    "critical",
                    f"{depth.dead_letters} failed tasks in {depth.queue}{settings.DEAD_LETTER_SUFFIX}",
                    depth.dead_letters,
                    settings.ALERT_DEAD_LETTERS,
                    depth.queue,
                )
            )
    return alerts


def _task_error_alerts() -> list[Alert]:
    from whatsapp_platform.monitoring.models import TaskFailure

    window = settings.ALERT_TASK_ERRORS_WINDOW_SECONDS
    since = timezone.now() - timedelta(seconds=window)
    errors = TaskFailure.objects.filter(occurred_at__gte=since).count()
    if errors <= settings.ALERT_TASK_ERRORS:
        return []
    return [
        Alert(
            "task_errors",
            "critical",
            f"{errors} task errors in the last {window} seconds",
            errors,
            settings.ALERT_TASK_ERRORS,
        )
    ]


def _archive_alerts() -> list[Alert]:
    from archival.models import ArchiveRun

    alerts = []
    now = timezone.now()
    limit = settings.ALERT_ARCHIVE_MAX_SECONDS
    for job_type in ArchiveRun.JobType.values:
        run = ArchiveRun.objects.filter(job_type=job_type).order_by("-created_at", "-id").first()
        if run is None:
            continue
        subject = f"{job_type} run {run.pk}"
        if run.state == ArchiveRun.State.FAILED:
            alerts.append(Alert("archive_failed", "critical", f"{subject} failed", 1, 0, subject))
            continue
        if run.started_at is None:
            continue
        end = run.finished_at or now
        seconds = (end - run.started_at).total_seconds()
        if seconds > limit:
            state = "has run" if run.finished_at is None else "took"
            alerts.append(
                Alert(
                    "archive_slow",
                    "warning",
                    f"{subject} {state} {int(seconds)} seconds",
                    round(seconds),
                    limit,
                    subject,
                )
            )
    return alerts


def _credential_alerts() -> list[Alert]:
    return [
        Alert(
            "channel_credentials",
            "critical",
            f"channel {channel.pk} of organization {channel.organization_id}: the provider "
            "rejected its credentials",
            1,
            0,
            f"channel {channel.pk}",
        )
        for channel in Channel.objects.filter(is_active=True).exclude(credential_error="")
    ]


def _ai_budget_alerts() -> list[Alert]:
    """Organizations that spent their monthly AI token budget: their AI replies have stopped."""
    budget = settings.AI_MONTHLY_TOKEN_BUDGET
    if not budget:
        return []
    from conversations.assistant import monthly_tokens_by_organization

    return [
        Alert(
            "ai_budget_spent",
            "warning",
            f"organization {organization_id} spent its monthly AI token budget: AI replies "
            "are stopped",
            tokens,
            budget,
            f"organization {organization_id}",
        )
        for organization_id, tokens in monthly_tokens_by_organization().items()
        if tokens >= budget
    ]


def alerts_evaluate(depths: list[QueueDepth] | None = None) -> list[Alert]:
    """The alerts active now. Unreachable SQS is an alert of its own."""
    alerts: list[Alert] = []
    if depths is None:
        try:
            depths = queue_depths()
        except QueuesUnavailable:
            alerts.append(Alert("broker_unreachable", "critical", "SQS cannot be read", 1, 0))
            depths = []
    alerts += _queue_alerts(depths)
    alerts += _task_error_alerts()
    alerts += _archive_alerts()
    alerts += _credential_alerts()
    alerts += _ai_budget_alerts()
    return alerts


def alerts_check_and_log() -> list[Alert]:
    """The beat task's step: sample the queues for the dashboard, log every active alert, and
    prune task failures older than a day."""
    from whatsapp_platform.monitoring.models import TaskFailure
    from whatsapp_platform.monitoring.queues import queue_samples_record

    depths: list[QueueDepth] | None
    try:
        depths = queue_depths()
        queue_samples_record(depths=depths, keep=timedelta(days=1))
    except QueuesUnavailable:
        depths = None
    alerts = alerts_evaluate(depths)
    for alert in alerts:
        log = logger.error if alert.severity == "critical" else logger.warning
        log(
            "Alert %s: %s (value %s, threshold %s)",
            alert.name,
            alert.message,
            alert.value,
            alert.threshold,
            extra={"alert": alert.name, "subject": alert.subject},
        )
    TaskFailure.objects.filter(occurred_at__lt=timezone.now() - timedelta(days=1)).delete()
    return alerts


# --- Summary --------------------------------------------------------------------------------


def campaign_progress() -> list[dict[str, Any]]:
    from campaigns.models import Campaign
    from campaigns.stats import campaign_stats

    active = Campaign.objects.filter(
        status__in=(Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.SCHEDULED)
    ).order_by("id")[:50]
    rows = []
    for campaign in active:
        stats = campaign_stats(campaign=campaign)
        rows.append(
            {
                "id": campaign.pk,
                "name": campaign.name,
                "organization": campaign.organization_id,
                "status": campaign.status,
                "recipients": stats["recipients"],
                "sent": stats["sent"],
                "delivered": stats["delivered"],
                "read": stats["read"],
                "failed": stats["failed"],
                "progress": stats["progress"],
            }
        )
    return rows


def summary() -> dict[str, Any]:
    """The figures of /monitoring/metrics as JSON, with the active alerts."""
    from conversations.models import Message
    from webhooks.models import WebhookEvent

    hour_ago = timezone.now() - timedelta(hours=1)
    try:
        depths: list[QueueDepth] | None = queue_depths()
        queues: dict[str, Any] = {d.queue: d.as_dict() for d in (depths or [])}
    except QueuesUnavailable as exc:
        depths, queues = None, {"error": str(exc)}
    webhooks = WebhookEvent.objects.filter(received_at__gte=hour_ago).aggregate(
        received=Count("id"),
        processed=Count("id", filter=Q(state=WebhookEvent.State.PROCESSED)),
        failed=Count("id", filter=Q(state=WebhookEvent.State.FAILED)),
        pending=Count(
            "id", filter=Q(state__in=(WebhookEvent.State.RECEIVED, WebhookEvent.State.QUEUED))
        ),
    )
    outbound = Message.objects.filter(direction=Message.Direction.OUTBOUND)
    sends = {
        "sent": outbound.filter(sent_at__gte=hour_ago).count(),
        "delivered": outbound.filter(delivered_at__gte=hour_ago).count(),
        "read": outbound.filter(read_at__gte=hour_ago).count(),
        "failed": outbound.filter(failed_at__gte=hour_ago).count(),
        "waiting": outbound.filter(
            status__in=(Message.Status.QUEUED, Message.Status.SENDING)
        ).count(),
    }
    return {
        "generated_at": timezone.now().isoformat(),
        "queues": queues,
        "webhooks_last_hour": webhooks,
        "sends_last_hour": sends,
        "campaigns": campaign_progress(),
        "archival": archive_last_runs(),
        "alerts": [a.as_dict() for a in alerts_evaluate(depths)],
    }


def archive_last_runs() -> dict[str, Any]:
    from archival.models import ArchiveRun

    runs = {}
    for job_type in ArchiveRun.JobType.values:
        run = ArchiveRun.objects.filter(job_type=job_type).order_by("-created_at", "-id").first()
        if run is not None:
            duration = (
                (run.finished_at - run.started_at).total_seconds()
                if run.started_at and run.finished_at
                else None
            )
            runs[job_type] = {
                "id": run.pk,
                "state": run.state,
                "rows_archived": run.rows_archived,
                "bytes_written": run.bytes_written,
                "duration_seconds": duration,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            }
    return runs
