from __future__ import annotations

from celery import shared_task

from whatsapp_platform.lib.providers.errors import ProviderRetryableError


@shared_task
def sync_all_templates() -> None:
    """Daily: one template sync per active Meta or Twilio channel."""
    from campaigns.template_sync import templates_sync_schedule

    templates_sync_schedule()


@shared_task(autoretry_for=(ProviderRetryableError,), retry_backoff=30, max_retries=4)
def sync_channel_templates(channel_id: int) -> None:
    from campaigns.template_sync import channel_templates_sync

    channel_templates_sync(channel_id=channel_id)
