from __future__ import annotations

from celery import shared_task

from whatsapp_platform.celery import enqueue_on_commit


@shared_task
def send_campaign_chunks(campaign_id: int) -> None:
    """One chunk sender of a campaign's fan-out: works for a bounded time, then goes on as a
    new task while work remains, so that no task comes near the time limits."""
    from campaigns.fanout import campaign_chunks_send

    if campaign_chunks_send(campaign_id=campaign_id):
        enqueue_on_commit(send_campaign_chunks, campaign_id)


@shared_task
def restart_stalled_fanouts() -> None:
    from campaigns.fanout import stalled_fanouts_restart

    stalled_fanouts_restart()
