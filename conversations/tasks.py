from __future__ import annotations

from celery import shared_task

from whatsapp_platform.lib.providers.errors import ProviderRetryableError


@shared_task(autoretry_for=(ProviderRetryableError,), retry_backoff=5, max_retries=6)
def download_media(asset_id: int) -> None:
    """Copy inbound media into archive storage promptly: Meta's media ids expire in 7 days."""
    from conversations.services import media_download

    media_download(asset_id=asset_id)


# The send tasks own no retry policy of their own: the send puts a message that must wait or
# retry back to `queued` with `next_attempt_at` and schedules its task again, so chunked
# campaign sends and single sends follow the same rules and nothing retries forever.
@shared_task
def send_message(message_id: int) -> None:
    from conversations.sending import message_send

    message_send(message_id=message_id)


@shared_task
def send_messages(message_ids: list[int], campaign: bool = False) -> None:
    from conversations.sending import messages_send

    messages_send(message_ids=message_ids, campaign=campaign)


@shared_task
def sweep_sends() -> None:
    from conversations.sending import messages_sweep

    messages_sweep()


@shared_task
def requeue_pending_media() -> None:
    from conversations.services import media_requeue_pending

    media_requeue_pending()


@shared_task
def prune_pending_statuses() -> None:
    from conversations.services import pending_statuses_prune

    pending_statuses_prune()
