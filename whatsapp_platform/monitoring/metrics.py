"""Metrics that the platform's processes count as things happen.

prometheus_client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set in settings): each
gunicorn worker and Celery pool process writes its values to its own files, and a scrape of
/monitoring/metrics sums them. Values read at scrape time (queue depths, campaign progress)
come from the collectors in `monitoring.collectors` instead.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Histogram

message_sends = Counter(
    "message_sends_total",
    "Outcomes of outbound sends: sent, failed, retry (put back after a retryable error), "
    "unknown, resent (an unknown send that no status named, sent again) and doubled (a resent "
    "send whose first attempt the provider reported after all), by provider error code or "
    "platform code.",
    ["status", "error_code"],
)
webhook_processing_seconds = Histogram(
    "webhook_processing_seconds",
    "Seconds from a webhook's receipt to the end of its processing.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
task_failures = Counter(
    "task_failures_total",
    "Task runs that raised: retried, or failed for good and dead-lettered.",
    ["task", "kind"],
)
# Unlabelled: event names come from clients, and labels must stay few.
analytics_events = Counter("analytics_events_total", "Client analytics events stored.")


def sends_count(status: str, count: int = 1, error_code: str = "") -> None:
    if count:
        message_sends.labels(status=status, error_code=error_code or "").inc(count)


def webhook_processed(provider: str, received_at: datetime, processed_at: datetime) -> None:
    seconds = max(0.0, (processed_at - received_at).total_seconds())
    webhook_processing_seconds.labels(provider=provider).observe(seconds)
