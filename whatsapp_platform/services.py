"""Use cases of tenancy: organizations, channels and API keys."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from whatsapp_platform.models import ApiKey, Channel, Heartbeat, Organization


def organization_get_or_create(*, name: str) -> tuple[Organization, bool]:
    return Organization.objects.get_or_create(name=name, defaults={"slug": slugify(name)[:200]})


@transaction.atomic
def channel_upsert(*, organization_name: str, provider: str, **fields: Any) -> tuple[Channel, bool]:
    """Create the organization's channel for this number, or update the one it has.

    The number is the phone_number_id for Meta and the sender address for the others. Empty
    values leave the stored ones as they are, so a re-run need not repeat every secret.
    """
    organization, _ = organization_get_or_create(name=organization_name)
    if provider == Channel.Provider.META:
        lookup = {"phone_number_id": fields["phone_number_id"]}
    else:
        lookup = {"sender": fields["sender"]}
    channel = (
        Channel.objects.select_for_update()
        .filter(organization=organization, provider=provider, **lookup)
        .first()
    )
    created = channel is None
    if channel is None:
        channel = Channel(organization=organization, provider=provider)
    for name, value in fields.items():
        if value not in (None, ""):
            setattr(channel, name, value)
    channel.full_clean()
    channel.save()
    return channel, created


def channel_flag_credential_error(*, channel_id: int, error: str) -> None:
    Channel.objects.filter(id=channel_id).update(
        credential_error=error[:1000], credential_error_at=timezone.now()
    )


def api_key_create(*, organization: Organization, name: str) -> tuple[ApiKey, str]:
    """A new API key and its secret, which is returned here and never stored."""
    api_key = ApiKey(organization=organization, name=name)
    raw_key = api_key.set_new_key()
    api_key.save()
    return api_key, raw_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    api_key = (
        ApiKey.objects.select_related("organization")
        .filter(key_hash=ApiKey.hash_key(raw_key), organization__is_active=True)
        .first()
    )
    if api_key is None or not api_key.is_active:
        return None
    now = timezone.now()
    # One write a minute at most: the hot path should not update this row on every request.
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(id=api_key.id).update(last_used_at=now)
    return api_key


def heartbeat_record(*, name: str) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"seen_at": timezone.now()})
