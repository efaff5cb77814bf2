"""Tasks that exist only in the test worker, to drive the platform's failure handling."""

from __future__ import annotations

import os

from celery import shared_task

from whatsapp_platform.services import heartbeat_record


class Flaky(Exception):
    pass


@shared_task(bind=True, autoretry_for=(Flaky,), max_retries=1, default_retry_delay=0)
def always_fails(self, marker: str) -> None:  # type: ignore[no-untyped-def]
    heartbeat_record(name=f"{marker}-attempt-{self.request.retries}")
    raise Flaky("the provider is down")


@shared_task
def kills_its_worker(marker: str) -> None:
    heartbeat_record(name=f"{marker}-{os.getpid()}")
    os._exit(1)


@shared_task
def fails_until_allowed(marker: str) -> None:
    """Fails (and is dead-lettered) until the `<marker>-allowed` heartbeat exists; then records
    one row per run, so a test can count how often it ran."""
    import uuid

    from whatsapp_platform.models import Heartbeat

    if not Heartbeat.objects.filter(name=f"{marker}-allowed").exists():
        raise Flaky("not allowed yet")
    heartbeat_record(name=f"{marker}-run-{uuid.uuid4().hex[:8]}")
