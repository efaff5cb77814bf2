"""Each channel's messages-per-second limit, shared by every worker on every machine.

A generic cell rate algorithm on the channel's `SendRate` row: `next_slot_at` is the earliest
time the next message may go out. One UPDATE reserves n slots, 1/rate apart, from
`GREATEST(next_slot_at, clock_timestamp())`, so reservations of concurrent workers never
overlap and there is no burst: any sliding one-second window holds at most the limit. The
rate used is a little under the channel's limit (`HEADROOM`), so that network jitter between
our clock and the provider's does not push a window over it.

Campaign traffic yields to everything else:
- it reserves only while the channel's next slot is close (`CAMPAIGN_HORIZON`), and in short
  runs (`CAMPAIGN_RUN_SECONDS`), so an API send or an AI reply waits behind at most one run;
- while other traffic flowed in the last `PRIORITY_RECENT_SECONDS` (`priority_seen_at`), its
  slots are spaced for CAMPAIGN_RATE_SHARE of the limit, and the full limit otherwise.

Times come from the database clock and are answered as delays, so the workers' own clocks
need not agree with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from conversations.models import SendRate

HEADROOM = 0.95
CAMPAIGN_HORIZON = 0.05
CAMPAIGN_RUN_SECONDS = 0.25
PRIORITY_RECENT_SECONDS = 5


@dataclass(frozen=True)
class Reservation:
    """`granted` slots, the first `delay` seconds from now, then one every `interval` seconds.

    With nothing granted, `delay` says when the channel will have a slot within reach.
    """

    granted: int
    delay: float
    interval: float


def slot_interval(messages_per_second: int) -> float:
    return 1.0 / (max(1, messages_per_second) * HEADROOM)


def campaign_run_size(messages_per_second: int) -> int:
    """How many slots a campaign reserves at once."""
    return max(1, math.ceil(messages_per_second * HEADROOM * CAMPAIGN_RUN_SECONDS))


def _table() -> str:
    return connection.ops.quote_name(SendRate._meta.db_table)


def slots_reserve(
    *, channel_id: int, messages_per_second: int, count: int, campaign: bool, max_wait: float
) -> Reservation:
    """Reserve `count` send slots on the channel, in one round trip.

    Other traffic takes its slots at the end of the queue if the first is at most `max_wait`
    seconds away; a campaign only when the next slot is within CAMPAIGN_HORIZON.
    """
    interval = slot_interval(messages_per_second)
    shared = interval / settings.CAMPAIGN_RATE_SHARE
    if connection.vendor != "postgresql":
        return _reserve_serialized(channel_id, count, campaign, max_wait, interval, shared)
    table = _table()
    if campaign:
        used = (
            f"(CASE WHEN priority_seen_at > clock_timestamp() - interval "
            f"'{PRIORITY_RECENT_SECONDS} seconds' THEN %(shared)s ELSE %(interval)s END)"
        )
        sql = (
            f"UPDATE {table} SET next_slot_at = GREATEST(next_slot_at, clock_timestamp()) "  # noqa: S608
            f"+ %(count)s * {used} * interval '1 second' "
            "WHERE channel_id = %(channel)s "
            "AND next_slot_at <= clock_timestamp() + %(horizon)s * interval '1 second' "
            f"RETURNING EXTRACT(EPOCH FROM next_slot_at - clock_timestamp()) "
            f"- %(count)s * {used}, {used}"
        )
        params = {
            "channel": channel_id,
            "count": count,
            "interval": interval,
            "shared": shared,
            "horizon": CAMPAIGN_HORIZON,
        }
    else:
        sql = (
            f"UPDATE {table} SET next_slot_at = GREATEST(next_slot_at, clock_timestamp()) "  # noqa: S608
            "+ %(count)s * %(interval)s * interval '1 second', "
            "priority_seen_at = clock_timestamp() "
            "WHERE channel_id = %(channel)s "
            "AND next_slot_at <= clock_timestamp() + %(max_wait)s * interval '1 second' "
            "RETURNING EXTRACT(EPOCH FROM next_slot_at - clock_timestamp()) "
            "- %(count)s * %(interval)s, %(interval)s"
        )
        params = {"channel": channel_id, "count": count, "interval": interval, "max_wait": max_wait}
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(sql, params)
            row = cursor.fetchone()
            if row is not None:
                return Reservation(
                    granted=count, delay=max(0.0, float(row[0])), interval=float(row[1])
                )
            cursor.execute(
                f"SELECT EXTRACT(EPOCH FROM next_slot_at - clock_timestamp()) FROM {table} "  # noqa: S608
                "WHERE channel_id = %s",
                [channel_id],
            )
            row = cursor.fetchone()
            if row is not None:
                return Reservation(granted=0, delay=max(0.0, float(row[0])), interval=interval)
            # A channel's first send: its row, then the reservation again.
            cursor.execute(
                f"INSERT INTO {table} (channel_id, next_slot_at) "  # noqa: S608
                "VALUES (%s, clock_timestamp()) ON CONFLICT (channel_id) DO NOTHING",
                [channel_id],
            )
    raise RuntimeError("The channel's send rate row could not be created.")


def _reserve_serialized(
    channel_id: int, count: int, campaign: bool, max_wait: float, interval: float, shared: float
) -> Reservation:
    """The same rules for the embedded SQLite default, whose write transactions run one at a
    time."""
    with transaction.atomic():
        now = timezone.now()
        rate, _ = SendRate.objects.get_or_create(
            channel_id=channel_id, defaults={"next_slot_at": now}
        )
        reach = CAMPAIGN_HORIZON if campaign else max_wait
        ahead = (rate.next_slot_at - now).total_seconds()
        if ahead > reach:
            return Reservation(granted=0, delay=ahead, interval=interval)
        recent = (
            rate.priority_seen_at is not None
            and (now - rate.priority_seen_at).total_seconds() < PRIORITY_RECENT_SECONDS
        )
        used = shared if campaign and recent else interval
        first = max(rate.next_slot_at, now)
        rate.next_slot_at = first + timedelta(seconds=count * used)
        if not campaign:
            rate.priority_seen_at = now
        rate.save()
    return Reservation(granted=count, delay=max(0.0, (first - now).total_seconds()), interval=used)


def slots_push_back(*, channel_id: int, seconds: float) -> None:
    """The provider said the channel is over its throughput: no slot for a while."""
    with transaction.atomic():
        rate = SendRate.objects.select_for_update().filter(channel_id=channel_id).first()
        if rate is not None:
            rate.next_slot_at = max(rate.next_slot_at, timezone.now() + timedelta(seconds=seconds))
            rate.save(update_fields=["next_slot_at"])


def channel_lock(*, channel_id: int) -> None:
    """Lock the channel's send rate row until the transaction ends (tier counting)."""
    SendRate.objects.get_or_create(channel_id=channel_id, defaults={"next_slot_at": timezone.now()})
    list(SendRate.objects.select_for_update().filter(channel_id=channel_id).values_list("pk"))


def slots_wait(*, channel_id: int) -> float:
    """Seconds until the channel's next free slot (0 when it is free now, or never used)."""
    rate = SendRate.objects.filter(channel_id=channel_id).values_list("next_slot_at", flat=True)
    next_slot_at = rate.first()
    if next_slot_at is None:
        return 0.0
    return max(0.0, (next_slot_at - timezone.now()).total_seconds())
