"""The messaging core's use cases: receiving messages, applying statuses, storing media."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from conversations.models import Contact, Conversation, MediaAsset, Message, PendingStatus
from conversations.selectors import message_ids_locked_for_link
from conversations.types import InboundMessage, StatusUpdate
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.providers import meta
from whatsapp_platform.lib.providers.errors import ProviderCredentialError, ProviderPermanentError
from whatsapp_platform.lib.providers.http import open_download
from whatsapp_platform.lib.providers.twilio import is_account_media_url
from whatsapp_platform.lib.storage import archive_storage
from whatsapp_platform.models import Channel, Organization
from whatsapp_platform.monitoring import metrics as send_metrics
from whatsapp_platform.services import channel_flag_credential_error

logger = logging.getLogger(__name__)


# --- Contacts -------------------------------------------------------------------------------


def contact_upsert(
    *,
    organization: Organization,
    wa_id: str | None,
    user_id: str | None,
    profile_name: str = "",
    username: str = "",
    inbound_at: datetime | None = None,
) -> Contact:
    """The organization's contact for this phone number or business-scoped id, kept current."""
    if not wa_id and not user_id:
        raise ValueError("A contact needs a WhatsApp id or a business-scoped user id.")
    identity = Q()
    if wa_id:
        identity |= Q(wa_id=wa_id)
    if user_id:
        identity |= Q(user_id=user_id)
    # Twice at most: a concurrent worker may create the contact between our read and insert.
    for _ in range(2):
        contacts = sorted(
            Contact.objects.filter(identity, organization=organization),
            key=lambda c: c.wa_id != wa_id,  # the one with this phone number first
        )
        if contacts:
            break
        try:
            with transaction.atomic():
                return Contact.objects.create(
                    organization=organization,
                    wa_id=wa_id,
                    user_id=user_id,
                    profile_name=profile_name,
                    username=username,
                    last_inbound_at=inbound_at,
                )
        except IntegrityError:
            continue
    contact = contacts[0]
    changes: dict[str, Any] = {}
    if profile_name and contact.profile_name != profile_name:
        changes["profile_name"] = profile_name
    if username and contact.username != username:
        changes["username"] = username
    if wa_id and not contact.wa_id and len(contacts) == 1:
        changes["wa_id"] = wa_id
    if user_id and not contact.user_id and len(contacts) == 1:
        changes["user_id"] = user_id
    if changes:
        changes["updated_at"] = timezone.now()
        Contact.objects.filter(id=contact.id).update(**changes)
    if inbound_at:
        # Statuses and messages arrive out of order: the window starts at the latest message.
        Contact.objects.filter(id=contact.id).update(
            last_inbound_at=Greatest(Coalesce("last_inbound_at", inbound_at), inbound_at)
        )
    contact.refresh_from_db()
    return contact


def contact_set_opt_out(*, contact_id: int, opted_out: bool) -> None:
    if opted_out:
        Contact.objects.filter(id=contact_id, opted_out_at=None).update(opted_out_at=timezone.now())
    else:
        Contact.objects.filter(id=contact_id).exclude(opted_out_at=None).update(opted_out_at=None)
        # Opting back in also lifts a marketing hold (Meta 131049/131050).
        Contact.objects.filter(id=contact_id).exclude(marketing_held_until=None).update(
            marketing_held_until=None
        )


def _opt_keyword(text: str) -> bool | None:
    """True for an opt-out keyword, False for an opt-in keyword, None for anything else."""
    word = text.strip().upper()
    if word in settings.OPT_OUT_KEYWORDS:
        return True
    if word in settings.OPT_IN_KEYWORDS:
        return False
    return None


# --- Inbound messages -----------------------------------------------------------------------


def message_receive(*, channel: Channel, inbound: InboundMessage) -> tuple[Message, bool]:
    """Record an inbound message once, however often it is delivered. Returns (message, new)."""
    received_at = inbound.timestamp or timezone.now()
    existing = Message.objects.filter(
        provider=channel.provider, provider_message_id=inbound.provider_message_id
    ).first()
    if existing is not None:
        return existing, False
    contact = contact_upsert(
        organization=channel.organization,
        wa_id=inbound.wa_id,
        user_id=inbound.user_id,
        profile_name=inbound.profile_name,
        username=inbound.username,
        inbound_at=received_at,
    )
    conversation, _ = Conversation.objects.get_or_create(
        channel=channel, contact=contact, defaults={"organization": channel.organization}
    )
    reply_to = None
    if inbound.reply_to_provider_id:
        reply_to = Message.objects.filter(
            organization=channel.organization,
            provider=channel.provider,
            provider_message_id=inbound.reply_to_provider_id,
        ).first()
    kind = inbound.type if inbound.type in Message.Type.values else Message.Type.UNSUPPORTED
    try:
        with transaction.atomic():
            if reply_to is not None and not message_ids_locked_for_link(ids=[reply_to.id]):
                reply_to = None  # archived in the meantime
            message = Message.objects.create(
                organization=channel.organization,
                channel=channel,
                contact=contact,
                conversation=conversation,
                direction=Message.Direction.INBOUND,
                provider=channel.provider,
                provider_message_id=inbound.provider_message_id,
                type=kind,
                text=inbound.text,
                content=inbound.content,
                status=Message.Status.RECEIVED,
                reply_to=reply_to,
                error_code=inbound.error_code,
                error_message=inbound.error_message,
            )
    except IntegrityError:  # the same message, recorded by a concurrent worker
        return Message.objects.get(
            provider=channel.provider, provider_message_id=inbound.provider_message_id
        ), False
    Conversation.objects.filter(id=conversation.id).update(
        last_message_at=Greatest(Coalesce("last_message_at", received_at), received_at)
    )
    if inbound.media is not None:
        asset = MediaAsset.objects.create(
            organization=channel.organization,
            message=message,
            provider_media_id=inbound.media.media_id,
            url=inbound.media.url,
            mime_type=inbound.media.mime_type,
            filename=inbound.media.filename,
        )
        from conversations.tasks import download_media

        enqueue_on_commit(download_media, asset.id)
    opt_out = _opt_keyword(inbound.text) if kind in ("text", "button", "interactive") else None
    if opt_out is not None:
        contact_set_opt_out(contact_id=contact.id, opted_out=opt_out)
    else:
        from conversations.assistant import reply_schedule  # inside: assistant imports sending

        reply_schedule(message=message)
    return message, True


# --- Statuses -------------------------------------------------------------------------------


def _status_changes(update: StatusUpdate, occurred_at: datetime) -> dict[str, Any]:
    changes: dict[str, Any] = {"status": update.status, "updated_at": timezone.now()}
    column = Message.STATUS_TIMESTAMP.get(update.status)
    if column:
        changes[column] = Coalesce(column, occurred_at)
    if update.status == Message.Status.FAILED:
        changes["error_code"] = update.error_code
        changes["error_message"] = ": ".join(
            part for part in (update.error_title, update.error_details) if part
        )
    return changes


def message_statuses_apply(
    *, organization: Organization, provider: str, updates: list[StatusUpdate]
) -> dict[str, int]:
    """Apply statuses to our outbound messages: only forward, each step's time recorded once.

    A status for a provider id not recorded yet that names our message id (a send whose
    outcome was unknown, or whose call has not returned yet) records that id on the
    organization's own message and is applied. One that names a message sent again after
    all, with the id of the first attempt, marks it sent twice and is only recorded. Any other
    status for an unknown id (it can arrive before our own send call has returned) is kept and
    applied when the message records that id. Returns how many were "applied", only
    "recorded" (the message is already further on) or left "pending".
    """
    for update in updates:
        if update.status not in Message.STATUS_RANK:
            raise ValueError(f"Unknown message status {update.status!r}.")
    ids: dict[str, int] = {
        str(provider_message_id): message_id
        for provider_message_id, message_id in Message.objects.filter(
            organization=organization,
            provider=provider,
            provider_message_id__in={u.provider_message_id for u in updates},
        ).values_list("provider_message_id", "id")
    }
    learnt, earlier = _provider_ids_reconcile(organization, provider, updates, ids)
    ids.update(learnt)
    counts = {"applied": 0, "recorded": 0, "pending": 0}
    pending = []
    known = [(ids[u.provider_message_id], u) for u in updates if u.provider_message_id in ids]
    if connection.vendor == "postgresql" and len(known) > 1:
        for outcome in _statuses_apply_together(known):
            counts[outcome] += 1
        updates = [u for u in updates if u.provider_message_id not in ids]
    for update in updates:
        message_id = ids.get(update.provider_message_id)
        if message_id is None and update.provider_message_id in earlier:
            counts["recorded"] += 1  # the first attempt of a message sent twice
        elif message_id is None:
            pending.append(
                PendingStatus.from_update(
                    organization=organization, provider=provider, update=update
                )
            )
            counts["pending"] += 1
        else:
            counts[_status_apply(message_id, update)] += 1
    PendingStatus.objects.bulk_create(pending)
    return counts


def _provider_ids_reconcile(
    organization: Organization, provider: str, updates: list[StatusUpdate], known: dict[str, int]
) -> tuple[dict[str, int], set[str]]:
    """Provider ids of sends whose outcome we never recorded (`unknown`, still `sending`, or
    waiting to be sent again), learnt from statuses that name our message id. Only the
    organization's own messages.

    Returns the ids learnt, and the ids of first attempts of messages that were sent again and
    already hold their resend's id: the recipient got those twice, which the message records.
    """
    named = {
        u.our_message_id: u.provider_message_id
        for u in updates
        if u.our_message_id is not None and u.provider_message_id not in known
    }
    if not named:
        return {}, set()
    status = Message.Status
    candidates = (
        Message.objects.filter(
            id__in=named,
            organization=organization,
            provider=provider,
            direction=Message.Direction.OUTBOUND,
        )
        .filter(
            Q(status__in=(status.UNKNOWN, status.SENDING), provider_message_id=None)
            # Queued to be sent again: the first attempt's status settles it, so it is not.
            | Q(status=status.QUEUED, provider_message_id=None, resent_at__isnull=False)
            # Sent again and recorded: a first attempt reported now went out as well.
            | Q(provider_message_id__isnull=False, resent_at__isnull=False)
        )
        .values_list("id", "provider_message_id")
    )
    found: dict[str, int] = {}
    earlier: set[str] = set()
    for message_id, recorded_id in candidates:
        provider_message_id = named[message_id]
        if recorded_id is not None:
            earlier.add(provider_message_id)
            _double_record(message_id, provider_message_id)
            continue
        try:
            with transaction.atomic():
                recorded = Message.objects.filter(id=message_id, provider_message_id=None).update(
                    provider_message_id=provider_message_id, updated_at=timezone.now()
                )
        except IntegrityError:  # that provider id belongs to another message
            continue
        if recorded:
            found[provider_message_id] = message_id
    return found, earlier


def _double_record(message_id: int, earlier_provider_message_id: str) -> None:
    """The provider accepted both attempts of a message that was sent again."""
    doubled = Message.objects.filter(id=message_id, earlier_provider_message_id=None).update(
        earlier_provider_message_id=earlier_provider_message_id, updated_at=timezone.now()
    )
    if doubled:
        logger.warning("Message %s was sent twice: its first attempt was accepted", message_id)
        send_metrics.sends_count("doubled", 1)


def _status_apply(message_id: int, update: StatusUpdate) -> str:
    occurred_at = update.timestamp or timezone.now()
    changes = _status_changes(update, occurred_at)
    if billing := _billing(update):
        changes["billing"] = billing
    moved = Message.objects.filter(
        id=message_id, status__in=Message.statuses_before(update.status)
    ).update(**changes)
    if moved:
        return "applied"
    # Already further on (read before delivered): keep the status, record when this step was.
    column = Message.STATUS_TIMESTAMP.get(update.status)
    if column and update.status != Message.Status.FAILED:
        Message.objects.filter(id=message_id, **{f"{column}__isnull": True}).update(
            **{column: occurred_at}
        )
    return "recorded"


def _billing(update: StatusUpdate) -> dict[str, Any] | None:
    billing = {k: update.extra[k] for k in ("conversation", "pricing") if k in update.extra}
    return billing or None


def _statuses_apply_together(pairs: list[tuple[int, StatusUpdate]]) -> list[str]:
    """`_status_apply` for many messages in two statements (PostgreSQL), for Meta's batches.

    Same rules: a status moves only forward, and a step the message is already past still
    records its time. A message named twice in the batch takes its later statuses one by one.
    """
    first: dict[int, StatusUpdate] = {}
    again: list[tuple[int, StatusUpdate]] = []
    for message_id, update in pairs:
        if message_id in first:
            again.append((message_id, update))
        else:
            first[message_id] = update
    table = connection.ops.quote_name(Message._meta.db_table)
    rank = " ".join(f"WHEN '{s}' THEN {r}" for s, r in Message.STATUS_RANK.items())
    stamps = ", ".join(
        f"{column} = CASE WHEN v.status = '{status}' THEN COALESCE(m.{column}, v.ts) "
        f"ELSE m.{column} END"
        for status, column in Message.STATUS_TIMESTAMP.items()
    )
    now = timezone.now()
    rows: list[str] = []
    params: list[Any] = []
    for message_id, update in first.items():
        rows.append("(%s, %s, %s, %s::timestamptz, %s, %s, %s::jsonb)")
        billing = _billing(update)
        params += [
            message_id,
            update.status,
            Message.STATUS_RANK[update.status],
            update.timestamp or now,
            update.error_code,
            ": ".join(part for part in (update.error_title, update.error_details) if part),
            json.dumps(billing) if billing else None,
        ]
    values = (
        f"(VALUES {', '.join(rows)}) AS v(id, status, rank, ts, error_code, error_message, billing)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS m SET status = v.status, updated_at = %s, {stamps}, "  # noqa: S608
            "error_code = CASE WHEN v.status = 'failed' THEN v.error_code ELSE m.error_code END, "
            "error_message = CASE WHEN v.status = 'failed' THEN v.error_message "
            "ELSE m.error_message END, billing = COALESCE(v.billing, m.billing) "
            f"FROM {values} WHERE m.id = v.id AND (CASE m.status {rank} END) < v.rank "
            "RETURNING m.id",
            [now, *params],
        )
        moved = {row[0] for row in cursor.fetchall()}
        # Already further on (read before delivered): keep the status, record the step's time.
        behind = [i for i, u in first.items() if i not in moved and u.status != "failed"]
        if behind:
            cursor.execute(
                f"UPDATE {table} AS m SET {stamps} FROM {values} "  # noqa: S608
                "WHERE m.id = v.id AND m.id = ANY(%s)",
                [*params, behind],
            )
    outcomes = ["applied" if i in moved else "recorded" for i in first]
    return outcomes + [_status_apply(message_id, update) for message_id, update in again]


def message_provider_id_record(*, message_id: int, provider_message_id: str) -> None:
    """Record the provider's id of an outbound message, then apply the statuses that came first."""
    with transaction.atomic():
        message = Message.objects.select_for_update().get(id=message_id)
        message.provider_message_id = provider_message_id
        message.save(update_fields=["provider_message_id", "updated_at"])
        pending = list(
            PendingStatus.objects.select_for_update()
            .filter(
                organization_id=message.organization_id,
                provider=message.provider,
                provider_message_id=provider_message_id,
            )
            .order_by("id")
        )
        for row in pending:
            _status_apply(message.id, row.as_update())
        PendingStatus.objects.filter(id__in=[row.id for row in pending]).delete()


def messages_sent_record(*, sent: dict[int, str]) -> None:
    """Record the provider ids of accepted sends (message id -> provider id) and mark them
    sent, in one statement; then apply statuses that arrived before the ids did."""
    if not sent:
        return
    now = timezone.now()
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Message._meta.db_table)
        rows = ", ".join(["(%s, %s)"] * len(sent))
        params: list[Any] = [now, now]
        for message_id, provider_message_id in sent.items():
            params += [message_id, provider_message_id]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS m SET provider_message_id = v.pid, "  # noqa: S608
                # A first attempt of a resent message reported meanwhile: it went out twice.
                "earlier_provider_message_id = CASE WHEN m.provider_message_id <> v.pid "
                "THEN m.provider_message_id ELSE m.earlier_provider_message_id END, "
                "status = CASE WHEN m.status IN ('sending', 'unknown') THEN 'sent' "
                "ELSE m.status END, sent_at = COALESCE(m.sent_at, %s), updated_at = %s, "
                "attempts = m.attempts + 1, next_attempt_at = NULL, error_code = '', "
                f"error_message = '' FROM (VALUES {rows}) AS v(id, pid) WHERE m.id = v.id",
                params,
            )
    else:
        for message_id, provider_message_id in sent.items():
            Message.objects.filter(id=message_id, provider_message_id__isnull=False).exclude(
                provider_message_id=provider_message_id
            ).update(earlier_provider_message_id=F("provider_message_id"))
            Message.objects.filter(id=message_id).update(
                provider_message_id=provider_message_id,
                sent_at=Coalesce("sent_at", now),
                attempts=F("attempts") + 1,
                next_attempt_at=None,
                error_code="",
                error_message="",
                updated_at=now,
            )
            Message.objects.filter(
                id=message_id, status__in=(Message.Status.SENDING, Message.Status.UNKNOWN)
            ).update(status=Message.Status.SENT)
    early = set(
        PendingStatus.objects.filter(provider_message_id__in=sent.values()).values_list(
            "provider_message_id", flat=True
        )
    )
    for message_id, provider_message_id in sent.items():
        if provider_message_id in early:
            message_provider_id_record(
                message_id=message_id, provider_message_id=provider_message_id
            )


# --- Media ----------------------------------------------------------------------------------


def _media_key(asset: MediaAsset, extension_from: str) -> str:
    day = asset.created_at
    name = asset.filename or extension_from.split("/")[-1].split(";")[0].strip() or "bin"
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)[-100:]
    if not asset.filename:
        safe = f"media.{safe}"
    return (
        f"media/org={asset.organization_id}/year={day:%Y}/month={day:%m}/day={day:%d}/"
        f"{asset.id}-{safe}"
    )


def media_download(*, asset_id: int) -> MediaAsset | None:
    """Copy an inbound media file from the provider into archive storage, streaming.

    Idempotent: a stored asset is left alone. Provider failures are raised classified, so the
    task retries the retryable ones; a permanent failure marks the asset failed.
    """
    asset = (
        MediaAsset.objects.select_related("message__channel")
        .filter(id=asset_id, state=MediaAsset.State.PENDING)
        .first()
    )
    if asset is None:
        return None
    channel = asset.message.channel
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    url = asset.url
    mime_type = asset.mime_type
    try:
        if channel.provider == Channel.Provider.META and asset.provider_media_id:
            info = meta.media_info(asset.provider_media_id, channel.access_token)
            url = str(info.get("url", ""))
            mime_type = mime_type or str(info.get("mime_type", ""))
            headers = meta.auth_headers(channel.access_token)
        elif channel.provider == Channel.Provider.TWILIO and is_account_media_url(
            url, channel.account_sid
        ):
            auth = (channel.account_sid, channel.auth_token)
        if not url:
            raise ProviderPermanentError("The media has no URL to download.")
        with open_download(url, headers=headers, auth=auth) as (stream, content_type):
            mime_type = mime_type or content_type
            stored = archive_storage().put_stream(
                _media_key(asset, mime_type), stream, content_type=mime_type
            )
    except ProviderPermanentError as exc:
        if isinstance(exc, ProviderCredentialError):
            channel_flag_credential_error(channel_id=channel.id, error=str(exc))
        MediaAsset.objects.filter(id=asset.id).update(
            state=MediaAsset.State.FAILED, error=str(exc)[:1000], updated_at=timezone.now()
        )
        return None
    MediaAsset.objects.filter(id=asset.id, state=MediaAsset.State.PENDING).update(
        state=MediaAsset.State.STORED,
        storage_key=stored.key,
        size=stored.size,
        sha256=stored.sha256,
        mime_type=mime_type,
        updated_at=timezone.now(),
    )
    asset.refresh_from_db()
    return asset


def media_requeue_pending(*, older_than_seconds: int = 120, limit: int = 500) -> int:
    """Enqueue downloads of media still pending after a while (their task was lost)."""
    from conversations.tasks import download_media

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    asset_ids = list(
        MediaAsset.objects.filter(state=MediaAsset.State.PENDING, updated_at__lt=cutoff)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    for asset_id in asset_ids:
        try:
            download_media.apply_async(args=(asset_id,))
        except Exception:
            logger.warning("Broker unavailable: media downloads wait for the next sweep")
            return 0
        # Touched so the next sweep leaves it to the task just sent.
        MediaAsset.objects.filter(id=asset_id).update(updated_at=timezone.now())
    return len(asset_ids)


def pending_statuses_prune(*, older_than_days: int = 7) -> int:
    """Drop statuses whose message never recorded its provider id: it never will."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = PendingStatus.objects.filter(received_at__lt=cutoff).delete()
    return deleted
