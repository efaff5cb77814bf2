from __future__ import annotations

from celery import shared_task


@shared_task
def record_heartbeat(name: str) -> None:
    """Record that a worker consuming this task's queue is alive (also a broker round trip)."""
    from whatsapp_platform.services import heartbeat_record

    heartbeat_record(name=name)
