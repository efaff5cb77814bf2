"""Copies of the providers' message templates: names, languages, components and approval status.

Meta lists a WhatsApp Business Account's templates; Twilio lists the account's Content
templates with their WhatsApp approval. A template that is no longer sendable pauses the
campaigns that use it; one gone at the provider is disabled, never deleted, since campaigns
reference it. The console provider has no templates to sync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from campaigns.models import MessageTemplate
from campaigns.services import template_campaigns_pause
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.providers import meta, twilio
from whatsapp_platform.lib.providers.errors import ProviderCredentialError, ProviderPermanentError
from whatsapp_platform.models import Channel
from whatsapp_platform.services import channel_flag_credential_error

logger = logging.getLogger(__name__)

Status = MessageTemplate.Status
SYNCED_PROVIDERS = (Channel.Provider.META, Channel.Provider.TWILIO)

META_STATUSES = {
    "APPROVED": Status.APPROVED,
    "PENDING": Status.PENDING,
    "IN_APPEAL": Status.PENDING,
    "REJECTED": Status.REJECTED,
    "PAUSED": Status.PAUSED,
    "DISABLED": Status.DISABLED,
    "LIMIT_EXCEEDED": Status.DISABLED,
    "PENDING_DELETION": Status.DISABLED,
    "DELETED": Status.DISABLED,
    "ARCHIVED": Status.DISABLED,
}
TWILIO_STATUSES = {
    "approved": Status.APPROVED,
    "pending": Status.PENDING,
    "received": Status.PENDING,
    "unsubmitted": Status.PENDING,
    "rejected": Status.REJECTED,
    "paused": Status.PAUSED,
    "disabled": Status.DISABLED,
}
GONE_REASON = "No longer at the provider."


@dataclass(frozen=True)
class ProviderTemplate:
    name: str
    language: str
    category: str
    body: str
    components: list[Any]
    status: str
    status_reason: str
    provider_template_id: str


@dataclass
class SyncResult:
    channel_id: int
    created: int = 0
    updated: int = 0
    disabled: int = 0
    paused_campaigns_for: list[int] = field(default_factory=list)  # template ids
    error: str = ""

    def __str__(self) -> str:
        if self.error:
            return f"channel {self.channel_id}: {self.error}"
        return (
            f"channel {self.channel_id}: {self.created} new, {self.updated} updated, "
            f"{self.disabled} disabled"
        )


def _category(value: Any) -> str:
    category = str(value or "").lower()
    # An unknown category is treated as marketing, whose frequency cap is the strictest.
    return category if category in MessageTemplate.Category.values else "marketing"


def _status(raw: Any, statuses: Mapping[str, str], provider: str) -> tuple[str, str]:
    """Our status for the provider's, and a note when the provider's says more than ours."""
    raw_text = str(raw or "")
    status = statuses.get(raw_text)
    if status is None:
        return Status.PENDING, f"Unknown status {raw_text!r} at {provider}."
    if raw_text.lower() != status:
        return status, f"{raw_text} at {provider}."
    return status, ""


def meta_template(item: dict[str, Any]) -> ProviderTemplate:
    components = item.get("components") or []
    body = next(
        (str(c.get("text", "")) for c in components if str(c.get("type", "")).upper() == "BODY"),
        "",
    )
    status, note = _status(item.get("status"), META_STATUSES, "Meta")
    rejected = str(item.get("rejected_reason") or "")
    reason = " ".join(part for part in (note, "" if rejected == "NONE" else rejected) if part)
    return ProviderTemplate(
        name=str(item["name"]),
        language=str(item.get("language") or "en_US"),
        category=_category(item.get("category")),
        body=body,
        components=components,
        status=status,
        status_reason=reason,
        provider_template_id=str(item.get("id") or ""),
    )


def twilio_template(item: dict[str, Any]) -> ProviderTemplate:
    approval = item.get("approval_requests") or {}
    if isinstance(approval.get("whatsapp"), dict):
        approval = approval["whatsapp"]
    types: dict[str, Any] = item.get("types") or {}
    body = str((types.get("twilio/text") or {}).get("body") or "")
    if not body:
        body = next(
            (str(t["body"]) for t in types.values() if isinstance(t, dict) and t.get("body")), ""
        )
    status, note = _status(approval.get("status") or "unsubmitted", TWILIO_STATUSES, "Twilio")
    reason = " ".join(p for p in (note, str(approval.get("rejection_reason") or "")) if p)
    return ProviderTemplate(
        # The WhatsApp template name once submitted; the Content's own name before.
        name=str(approval.get("name") or item.get("friendly_name") or item["sid"]),
        language=str(item.get("language") or "en"),
        category=_category(approval.get("category")),
        body=body,
        components=[
            {"type": name, **spec} for name, spec in types.items() if isinstance(spec, dict)
        ],
        status=status,
        status_reason=reason,
        provider_template_id=str(item["sid"]),
    )


def _fetch(channel: Channel) -> Iterator[ProviderTemplate]:
    if channel.provider == Channel.Provider.META:
        if not channel.waba_id:
            raise ProviderPermanentError("The channel has no WABA id to list templates of.")
        for item in meta.message_templates(channel.waba_id, channel.access_token):
            yield meta_template(item)
    else:
        for item in twilio.content_and_approvals(channel.account_sid, channel.auth_token):
            yield twilio_template(item)


FIELDS = ("category", "body", "components", "status", "status_reason", "provider_template_id")


@transaction.atomic
def _store(channel: Channel, fetched: Iterable[ProviderTemplate]) -> SyncResult:
    now = timezone.now()
    result = SyncResult(channel_id=channel.id)
    stored = {
        (t.name, t.language): t
        for t in MessageTemplate.objects.select_for_update().filter(channel=channel)
    }
    latest = {(t.name, t.language): t for t in fetched}
    unsendable: list[tuple[MessageTemplate, str]] = []  # became so in this sync
    new: list[MessageTemplate] = []
    changed: list[MessageTemplate] = []
    for key, provider_template in latest.items():
        template = stored.pop(key, None)
        values = {name: getattr(provider_template, name) for name in FIELDS}
        if template is None:
            new.append(
                MessageTemplate(
                    organization_id=channel.organization_id,
                    channel=channel,
                    name=provider_template.name,
                    language=provider_template.language,
                    synced_at=now,
                    **values,
                )
            )
            continue
        was = template.status
        for name, value in values.items():
            setattr(template, name, value)
        template.synced_at = now
        template.updated_at = now
        changed.append(template)
        if template.status != was and template.status != Status.APPROVED:
            unsendable.append((template, template.status_reason))
    for template in stored.values():  # gone at the provider
        template.synced_at = now
        template.updated_at = now
        if template.status != Status.DISABLED:
            template.status = Status.DISABLED
            template.status_reason = GONE_REASON
            unsendable.append((template, GONE_REASON))
            result.disabled += 1
        changed.append(template)
    MessageTemplate.objects.bulk_create(new)
    MessageTemplate.objects.bulk_update(changed, [*FIELDS, "synced_at", "updated_at"])
    for template, reason in unsendable:
        template_campaigns_pause(
            template_ids=[template.id],
            name=template.name,
            language=template.language,
            status=template.status,
            reason=reason,
        )
        result.paused_campaigns_for.append(template.id)
    result.created = len(new)
    result.updated = len(changed) - result.disabled
    return result


def channel_templates_sync(*, channel_id: int) -> SyncResult:
    """Bring the channel's copies of its provider templates up to date.

    Retryable provider errors are raised, for the caller's retry; credential errors flag the
    channel, and they and other permanent errors come back in the result's `error`.
    """
    channel = Channel.objects.get(id=channel_id)
    if channel.provider not in SYNCED_PROVIDERS:
        return SyncResult(channel_id=channel_id)
    try:
        fetched = list(_fetch(channel))  # the network, outside any transaction
    except ProviderPermanentError as exc:
        if isinstance(exc, ProviderCredentialError):
            channel_flag_credential_error(channel_id=channel.id, error=str(exc))
        logger.warning(
            "Template sync of channel %s failed: %s %s", channel.id, type(exc).__name__, exc.code
        )
        return SyncResult(channel_id=channel_id, error=str(exc))
    result = _store(channel, fetched)
    logger.info(
        "Template sync of channel %s: %s new, %s updated, %s disabled",
        channel.id,
        result.created,
        result.updated,
        result.disabled,
    )
    return result


def syncable_channel_ids(channel_ids: Iterable[int] | None = None) -> list[int]:
    channels = Channel.objects.filter(provider__in=SYNCED_PROVIDERS, is_active=True)
    if channel_ids is not None:
        channels = channels.filter(id__in=list(channel_ids))
    return list(channels.order_by("id").values_list("id", flat=True))


def templates_sync_schedule(*, channel_ids: Iterable[int] | None = None) -> int:
    """Enqueue one sync per active Meta or Twilio channel (all, or those given); the count."""
    from campaigns.tasks import sync_channel_templates

    ids = syncable_channel_ids(channel_ids)
    for channel_id in ids:
        enqueue_on_commit(sync_channel_templates, channel_id)
    return len(ids)
