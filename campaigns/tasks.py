from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

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


@shared_task(
    # Longer than other tasks: a file of CAMPAIGN_AUDIENCE_MAX_BYTES is a million rows.
    soft_time_limit=settings.CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT * 9 // 10,
    time_limit=settings.CAMPAIGN_AUDIENCE_IMPORT_TIME_LIMIT,
)
def import_audience_file(audience_import_id: int) -> None:
    """A large audience file, imported in one transaction; a delivery after the end does nothing."""
    from campaigns.audience import audience_import_fail, audience_import_run

    try:
        audience_import_run(audience_import_id=audience_import_id)
    except SoftTimeLimitExceeded:
        # The import's transaction has rolled back: nothing of the file was imported.
        audience_import_fail(
            audience_import_id=audience_import_id,
            error="The file took too long to import: split it into smaller files.",
        )


@shared_task
def sweep_audience_imports() -> None:
    """Beat, every ten minutes: lost imports sent again, left-over stored files deleted."""
    from campaigns.audience import audience_imports_sweep

    audience_imports_sweep()
