"""Channel lookups of the webhook hot path, cached briefly in each process.

A Meta delivery names its numbers; the channels behind them, and their app secrets, change
rarely. Each process keeps what it looked up for CHANNEL_CACHE_SECONDS, and drops it all when a
channel is saved here; other processes see the change within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import Q
from django.db.models.signals import post_delete, post_save

from whatsapp_platform.models import Channel

CHANNEL_CACHE_SECONDS = 30.0
_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class ChannelSecret:
    channel_id: int
    organization_id: int
    app_secret: str
    phone_number_id: str = ""


_cache: dict[object, tuple[float, list[ChannelSecret]]] = {}
_lock = threading.Lock()


def _cached(key: object, load: Callable[[], list[ChannelSecret]]) -> list[ChannelSecret]:
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = load()
    with _lock:
        if len(_cache) >= _MAX_ENTRIES:
            _cache.clear()
        if value:  # a number with no channel yet is looked up again next time
            _cache[key] = (now + CHANNEL_CACHE_SECONDS, value)
    return value


def meta_channels_named(*, phone_number_ids: set[str], waba_ids: set[str]) -> list[ChannelSecret]:
    """The Meta channels a delivery names, by phone_number_id or WABA id."""

    def load() -> list[ChannelSecret]:
        channels = Channel.objects.filter(
            Q(phone_number_id__in=phone_number_ids) | Q(waba_id__in=waba_ids),
            provider=Channel.Provider.META,
        ).only("id", "organization_id", "app_secret", "phone_number_id")
        return [
            ChannelSecret(c.id, c.organization_id, c.app_secret, c.phone_number_id)
            for c in channels
        ]

    return _cached(("named", frozenset(phone_number_ids), frozenset(waba_ids)), load)


def meta_app_secrets() -> list[ChannelSecret]:
    """Every Meta channel's app secret, for deliveries that name no known number."""

    def load() -> list[ChannelSecret]:
        channels = (
            Channel.objects.filter(provider=Channel.Provider.META)
            .exclude(app_secret="")
            .only("id", "organization_id", "app_secret")
        )
        return [ChannelSecret(c.id, c.organization_id, c.app_secret) for c in channels]

    return _cached("all", load)


def _forget(**kwargs: object) -> None:
    with _lock:
        _cache.clear()


post_save.connect(_forget, sender=Channel, dispatch_uid="webhooks.selectors.forget")
post_delete.connect(_forget, sender=Channel, dispatch_uid="webhooks.selectors.forget_deleted")
