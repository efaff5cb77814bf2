"""Celery signal receivers: correlation ids across the broker, worker heartbeats, task failures,
the clean-up of a dead process's metric files, and start-up objects kept out of the garbage
collector's way."""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import Any

from celery.signals import (
    before_task_publish,
    setup_logging,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from whatsapp_platform.monitoring.logs import TASK_HEADER, correlation_id, correlation_id_from

logger = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "worker:"


@setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    # Connected, so Celery leaves logging alone: workers log through settings.LOGGING (JSON,
    # redacted, with correlation ids) like the web processes.
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@before_task_publish.connect
def add_correlation_header(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is not None and not headers.get(TASK_HEADER):
        headers[TASK_HEADER] = correlation_id.get() or correlation_id_from(None)


@task_prerun.connect
def set_task_correlation(task: Any = None, **kwargs: Any) -> None:
    # Set for each task (a new id for work no request caused, such as beat's), and kept until
    # the next one, so the worker's own lines after the task still carry it.
    value = getattr(task.request, TASK_HEADER, None) if task is not None else None
    if value is None and task is not None:
        value = (task.request.headers or {}).get(TASK_HEADER)
    correlation_id.set(correlation_id_from(value, several=True))


@task_retry.connect
def record_retry(
    sender: Any = None, request: Any = None, reason: Any = None, **kwargs: Any
) -> None:
    from whatsapp_platform.monitoring.services import task_failure_record

    delivery_info = getattr(request, "delivery_info", None) or {}
    task_failure_record(
        task=getattr(sender, "name", "") or "",
        task_id=getattr(request, "id", "") or "",
        queue=delivery_info.get("routing_key") or "",
        kind="retry",
        error=type(getattr(reason, "exc", reason)).__name__,
    )


@worker_init.connect
@worker_ready.connect
def freeze_startup_objects(**kwargs: Any) -> None:
    """Leave what start-up built (Django, Celery, botocore's service models: hundreds of
    thousands of objects) out of the garbage collector's full passes. Those otherwise stop every
    thread of the process for 100-200 ms every few seconds, long enough for paced sends to miss
    their slots. Before the pool starts, so prefork children inherit it (and share those pages),
    and again once the consumer runs, for the thread pool's single process."""
    gc.collect()
    gc.freeze()


# --- Heartbeats -----------------------------------------------------------------------------

_stop = threading.Event()


def heartbeat_name(hostname: str, queue: str) -> str:
    return f"{HEARTBEAT_PREFIX}{hostname}:{queue}"[:100]


def _beat_forever(hostname: str, queues: list[str], interval: float) -> None:
    from django.db import connection

    from whatsapp_platform.services import heartbeat_record

    while True:
        try:
            for queue in queues:
                heartbeat_record(name=heartbeat_name(hostname, queue))
        except Exception:
            logger.warning("Could not record the heartbeat of worker %s", hostname)
        finally:
            connection.close()
        if _stop.wait(interval):
            return


@worker_ready.connect
def start_heartbeats(sender: Any = None, **kwargs: Any) -> None:
    """The worker's consumer is running: record, every WORKER_HEARTBEAT_SECONDS, that it
    consumes each of its queues (SQS has no broadcast, so there is no remote ping)."""
    from django.conf import settings

    queues = sorted(sender.app.amqp.queues.consume_from)
    _stop.clear()
    threading.Thread(
        target=_beat_forever,
        args=(sender.hostname, queues, settings.WORKER_HEARTBEAT_SECONDS),
        name="heartbeat",
        daemon=True,
    ).start()


@worker_ready.connect
def serve_worker_metrics(sender: Any = None, **kwargs: Any) -> None:
    """With WORKER_METRICS_PORT set, the worker serves its host's metric files itself: for
    workers on machines other than the web's, where /monitoring/metrics cannot read them."""
    from django.conf import settings

    if not settings.WORKER_METRICS_PORT:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(settings.WORKER_METRICS_PORT, registry=registry)


@worker_shutdown.connect
def stop_heartbeats(**kwargs: Any) -> None:
    _stop.set()


@worker_process_shutdown.connect
def forget_process_metrics(pid: int | None = None, **kwargs: Any) -> None:
    """A pool process ends: its live gauges go; its counters stay summed in the files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
