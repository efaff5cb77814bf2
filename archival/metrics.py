"""Prometheus metrics of archival, labelled by job (messages, media, restore, erase)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ROWS = Counter("archival_rows_total", "Rows archived, restored or erased.", ["job"])
OBJECTS = Counter("archival_objects_total", "Archive objects written.", ["job"])
BYTES = Counter("archival_bytes_total", "Bytes written to archive storage.", ["job"])
FAILURES = Counter("archival_failures_total", "Failed runs, and media downloads skipped.", ["job"])
DURATION = Histogram(
    "archival_run_duration_seconds",
    "Duration of one archival task's work.",
    ["job"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600),
)
