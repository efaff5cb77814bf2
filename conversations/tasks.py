from __future__ import annotations

from celery import shared_task
from django.conf import settings

from whatsapp_platform.lib.providers.errors import ProviderRetryableError


@shared_task(autoretry_for=(ProviderRetryableError,), retry_backoff=5, max_retries=6)
def download_media(asset_id: int) -> None:
    """Copy inbound media into archive storage promptly: Meta's media ids expire in 7 days."""
    from conversations.services import media_download

    media_download(asset_id=asset_id)


@shared_task(
    autoretry_for=(ProviderRetryableError,),
    retry_backoff=settings.MESSAGE_SEND_RETRY_BACKOFF,
    retry_jitter=True,
    max_retries=settings.MESSAGE_SEND_MAX_RETRIES,
)
def send_message(message_id: int) -> None:
    from conversations.sending import message_send

    message_send(message_id=message_id)


@shared_task
def requeue_pending_media() -> None:
    from conversations.services import media_requeue_pending

    media_requeue_pending()


@shared_task
def prune_pending_statuses() -> None:
    from conversations.services import pending_statuses_prune

    pending_statuses_prune()
