"""The Prometheus scrape: every process's counters from the multiprocess files, and values read
now (queue depths from SQS, campaign progress and archival from the database)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from whatsapp_platform.monitoring.queues import QueuesUnavailable, queue_depths

logger = logging.getLogger(__name__)


class QueueCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sqs_up", "1 when SQS answered this scrape.")
        depth = GaugeMetricFamily(
            "queue_messages", "Messages in each queue by state.", labels=["queue", "state"]
        )
        dead = GaugeMetricFamily(
            "dead_letter_messages", "Messages in each queue's dead-letter queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "queue_oldest_message_age_seconds",
            "Age of the oldest waiting work per queue (incoming and outgoing, from the "
            "database); 0 when none waits.",
            labels=["queue"],
        )
        dead_age = GaugeMetricFamily(
            "dead_letter_oldest_message_age_seconds",
            "Age of the oldest dead letter per queue; 0 when there is none.",
            labels=["queue"],
        )
        try:
            depths = queue_depths()
        except QueuesUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for d in depths:
            depth.add_metric([d.queue, "visible"], d.visible)
            depth.add_metric([d.queue, "in_flight"], d.in_flight)
            depth.add_metric([d.queue, "delayed"], d.delayed)
            dead.add_metric([d.queue], d.dead_letters)
            if d.queue in ("incoming", "outgoing"):
                age.add_metric([d.queue], d.oldest_age_seconds or 0)
            dead_age.add_metric([d.queue], d.dead_letter_oldest_age_seconds or 0)
        yield from (up, depth, dead, age, dead_age)


class DatabaseCollector(Collector):
    """Campaign progress and the last archive runs, as they stand in the database."""

    def collect(self) -> Iterator[Metric]:
        from whatsapp_platform.monitoring.services import archive_last_runs, campaign_progress

        messages = GaugeMetricFamily(
            "campaign_messages",
            "Messages of active campaigns by status.",
            labels=["campaign", "status"],
        )
        progress = GaugeMetricFamily(
            "campaign_progress_ratio",
            "Share of an active campaign's recipients that are done.",
            labels=["campaign"],
        )
        for row in campaign_progress():
            campaign = str(row["id"])
            for status in ("recipients", "sent", "delivered", "read", "failed"):
                messages.add_metric([campaign, status], row[status])
            progress.add_metric([campaign], row["progress"])
        rows = GaugeMetricFamily(
            "archive_last_run_rows", "Rows archived by the last run.", labels=["job"]
        )
        written = GaugeMetricFamily(
            "archive_last_run_bytes", "Bytes written by the last run.", labels=["job"]
        )
        duration = GaugeMetricFamily(
            "archive_last_run_duration_seconds",
            "Duration of the last finished run.",
            labels=["job"],
        )
        failed = GaugeMetricFamily(
            "archive_last_run_failed", "1 when the last run failed.", labels=["job"]
        )
        for job, run in archive_last_runs().items():
            rows.add_metric([job], run["rows_archived"])
            written.add_metric([job], run["bytes_written"])
            if run["duration_seconds"] is not None:
                duration.add_metric([job], run["duration_seconds"])
            failed.add_metric([job], 1 if run["state"] == "failed" else 0)
        yield from (messages, progress, rows, written, duration, failed)


def metrics_text() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueCollector())
    registry.register(DatabaseCollector())
    return generate_latest(registry)
