from __future__ import annotations

from celery import shared_task

from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.providers.errors import ProviderRetryableError


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


@shared_task
def sync_all_templates() -> None:
    """Daily: one template sync per active Meta or Twilio channel."""
    from campaigns.template_sync import templates_sync_schedule

    templates_sync_schedule()


@shared_task(autoretry_for=(ProviderRetryableError,), retry_backoff=30, max_retries=4)
def sync_channel_templates(channel_id: int) -> None:
    from campaigns.template_sync import channel_templates_sync

    channel_templates_sync(channel_id=channel_id)


@shared_task
def launch_due_campaigns() -> None:
    """Beat, every minute: launch the scheduled campaigns whose time has come."""
    from campaigns.services import campaigns_launch_due

    campaigns_launch_due()
