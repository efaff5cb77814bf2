"""Outbound messages: queue a send, then send it exactly once through the channel's provider.

A message is written `queued` and its task enqueued after the commit. The task claims it with a
conditional update that exactly one worker wins, calls the provider, and records the provider's
id before it acknowledges; a redelivered task finds the message claimed and never calls the
provider again.
"""

from __future__ import annotations

import logging
from typing import Any

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
