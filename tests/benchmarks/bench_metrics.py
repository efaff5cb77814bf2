"""Operations benchmark: the cost of a metrics scrape over many processes' files, and of one
JSON log line with redaction.

1. `--processes` child processes (like gunicorn workers and Celery pool processes) each count
   sends over every status and `--codes` error codes, and observe webhook latencies; then the
   multiprocess scrape (the part of /monitoring/metrics that reads the files) is timed.
2. One log line with a phone number, an API key and extras, formatted by the platform's JSON
   formatter after its redaction filter, is timed.

Usage: .venv/bin/python tests/benchmarks/bench_metrics.py [--processes 16] [--codes 50]
It needs no server. The last line is machine-readable:
RESULT processes=… files=… scrape_ms=… log_line_us=…
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _count(codes: int) -> None:
    from datetime import UTC, datetime, timedelta

    from whatsapp_platform.monitoring import metrics

    now = datetime.now(tz=UTC)
    for status in ("sent", "failed", "retry", "unknown"):
        for code in range(codes):
            metrics.sends_count(status, 3, str(131000 + code))
    for i in range(1000):
        metrics.webhook_processed("meta", now - timedelta(milliseconds=i), now)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--codes", type=int, default=50)
    options = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="bench-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()

    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_count, args=(options.codes,)) for _ in range(options.processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join()

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    timings = []
    for _ in range(5):
        start = time.perf_counter()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
        timings.append((time.perf_counter() - start) * 1000)
    files = len(list(Path(folder).glob("*.db")))
    scrape_ms = statistics.median(timings)
    print(f"{options.processes} processes, {files} files, {len(text)} bytes of text")
    print(f"scrape (median of 5): {scrape_ms:.1f} ms")

    from whatsapp_platform.monitoring.logs import CorrelationIdFilter, JsonFormatter, RedactFilter

    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(CorrelationIdFilter())
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    lines = 20000
    start = time.perf_counter()
    for i in range(lines):
        logger.info(
            "Send of message %s to %s with key %s",
            i,
            "+4915112345678",
            "wpk_abcdefghijklmnop",
            extra={"text": "Hello there", "message_id": i},
        )
    log_us = (time.perf_counter() - start) / lines * 1e6
    print(f"one JSON log line with redaction: {log_us:.1f} µs")
    print(
        f"RESULT processes={options.processes} files={files} scrape_ms={scrape_ms:.1f} "
        f"log_line_us={log_us:.1f}"
    )


if __name__ == "__main__":
    main()
