"""Outbound messages: queue a send, then send it exactly once through the channel's provider.

A message is written `queued` and its task enqueued after the commit. The task claims it with a
conditional update that exactly one worker wins, calls the provider, and records the provider's
id before it acknowledges; a redelivered task finds the message claimed and never calls the
provider again.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import Contact, Conversation, Message
from conversations.services import message_provider_id_record
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.providers.base import OutboundMessage, backend_for
from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderPermanentError,
    ProviderRetryableError,
)
from whatsapp_platform.models import Channel
from whatsapp_platform.services import channel_flag_credential_error

logger = logging.getLogger(__name__)

Status = Message.Status


def message_queue(
    *,
    channel: Channel,
    contact: Contact,
    type: str,
    content: dict[str, Any],
    text: str = "",
    priority: int = Message.Priority.NORMAL,
    idempotency_key: str | None = None,
    reply_to: Message | None = None,
) -> tuple[Message, bool]:
    """Write an outbound message `queued` and enqueue its send once committed.

    Returns (message, created). With an idempotency key already used by the organization, the
    existing message is returned and nothing new is sent.
    """
    if idempotency_key:
        existing = Message.objects.filter(
            organization_id=channel.organization_id, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return existing, False
    conversation, _ = Conversation.objects.get_or_create(
        channel=channel,
        contact=contact,
        defaults={"organization_id": channel.organization_id},
    )
    try:
        with transaction.atomic():
            message = Message.objects.create(
                organization_id=channel.organization_id,
                channel=channel,
                contact=contact,
                conversation=conversation,
                direction=Message.Direction.OUTBOUND,
                provider=channel.provider,
                type=type,
                text=text,
                content=content,
                status=Status.QUEUED,
                queued_at=timezone.now(),
                priority=priority,
                idempotency_key=idempotency_key or None,
                reply_to=reply_to,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won.
        return Message.objects.get(
            organization_id=channel.organization_id, idempotency_key=idempotency_key
        ), False
    from conversations.tasks import send_message

    enqueue_on_commit(send_message, message.id)
    return message, True


def _claim(message_id: int) -> bool:
    """Exactly one worker moves a queued message to `sending`."""
    return bool(
        Message.objects.filter(id=message_id, status=Status.QUEUED).update(
            status=Status.SENDING,
            send_started_at=timezone.now(),
            updated_at=timezone.now(),
        )
    )


def _outbound(message: Message) -> OutboundMessage:
    contact = message.contact
    return OutboundMessage(
        message_id=message.id,
        to=contact.wa_id or contact.user_id or "",
        type=message.type,
        content=message.content,
    )


def message_send(*, message_id: int) -> str:
    """Send one queued message through its channel's provider; returns its status after."""
    if not _claim(message_id):
        return str(Message.objects.values_list("status", flat=True).get(id=message_id))
    message = Message.objects.select_related("channel", "contact").get(id=message_id)
    Message.objects.filter(id=message_id).update(attempts=message.attempts + 1)
    try:
        result = backend_for(message.channel).send(message.channel, _outbound(message))
    except ProviderRetryableError:
        # Not accepted by the provider: back to the queue, for the task's retry.
        Message.objects.filter(id=message_id, status=Status.SENDING).update(
            status=Status.QUEUED, send_started_at=None, updated_at=timezone.now()
        )
        raise
    except ProviderPermanentError as exc:
        if isinstance(exc, ProviderCredentialError):
            channel_flag_credential_error(channel_id=message.channel_id, error=str(exc))
        Message.objects.filter(id=message_id, status=Status.SENDING).update(
            status=Status.FAILED,
            failed_at=timezone.now(),
            error_code=exc.code,
            error_message=str(exc)[:1000],
            updated_at=timezone.now(),
        )
        return Status.FAILED
    with transaction.atomic():
        Message.objects.filter(id=message_id, status=Status.SENDING).update(
            status=Status.SENT, sent_at=timezone.now(), updated_at=timezone.now()
        )
        message_provider_id_record(
            message_id=message_id, provider_message_id=result.provider_message_id
        )
    return Status.SENT


_chunk_pool: ThreadPoolExecutor | None = None


def messages_send(*, message_ids: list[int], campaign: bool = False) -> dict[int, str]:
    """Send a chunk of queued messages concurrently; returns each message's status after.

    A plain thread pool over `message_send`: no pacing. A retryable failure leaves the message
    queued and hands it to the send task, which retries it with back-off.
    """
    global _chunk_pool
    if _chunk_pool is None:
        # Threads keep their database connections between chunks.
        _chunk_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="send")

    def send(message_id: int) -> str:
        try:
            status = message_send(message_id=message_id)
        except ProviderRetryableError:
            from conversations.tasks import send_message

            send_message.apply_async(
                args=(message_id,), countdown=settings.MESSAGE_SEND_RETRY_BACKOFF
            )
            return Status.QUEUED
        if status == Status.SENT:
            _marketing_sent_record(message_id)
        return status

    return dict(zip(message_ids, _chunk_pool.map(send, message_ids), strict=True))


def _marketing_sent_record(message_id: int) -> None:
    """A marketing template counts towards its contact's frequency cap once it is sent."""
    message = Message.objects.only("contact_id", "content").get(id=message_id)
    if message.content.get("template", {}).get("category") == "marketing":
        Contact.objects.filter(id=message.contact_id).update(last_marketing_at=timezone.now())
