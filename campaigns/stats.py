"""Campaign progress: aggregates over the audience and its messages, a few queries at any size.

Delivery status lives on each Message only; these figures are computed from it. A completed
campaign keeps its figures in final_stats, which answer once its messages have been archived.
"""

from __future__ import annotations

from typing import TypedDict

from django.db.models import Count, Q

from campaigns.models import Campaign, CampaignAudience
from conversations.models import Message

Status = Message.Status

# Not yet accepted by the provider.
_WAITING = (Status.PENDING, Status.QUEUED, Status.SENDING, Status.UNKNOWN)
# Accepted by the provider: a delivered or read message was sent too.
_SENT = (Status.SENT, Status.DELIVERED, Status.READ)
_DELIVERED = (Status.DELIVERED, Status.READ)


class CampaignStats(TypedDict):
    recipients: int  # audience rows
    pending: int  # not turned into a message yet
    messages: int
    queued: int
    sent: int
    delivered: int
    read: int
    failed: int
    replied: int
    skipped: int  # skipped at import, or not sent by the platform (opt-out, caps)
    delivery_rate: float  # delivered / sent
    read_rate: float  # read / sent
    reply_rate: float  # replied / sent
    failure_rate: float  # failed / (sent + failed)
    progress: float  # share of recipients that are done: sent, failed or skipped
    final: bool  # read from the figures kept at completion


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def campaign_stats_compute(*, campaign: Campaign) -> CampaignStats:
    """The live figures: one aggregate over audience and messages, one count of replies."""
    skip_codes = Q(message__error_code__in=Message.SKIP_CODES)
    failed = Q(message__status=Status.FAILED)
    counts = CampaignAudience.objects.filter(campaign_id=campaign.id).aggregate(
        recipients=Count("id"),
        pending=Count("id", filter=Q(state=CampaignAudience.State.PENDING)),
        skipped_rows=Count("id", filter=Q(state=CampaignAudience.State.SKIPPED)),
        messages=Count("message_id"),
        queued=Count("id", filter=Q(message__status__in=_WAITING)),
        sent=Count("id", filter=Q(message__status__in=_SENT)),
        delivered=Count("id", filter=Q(message__status__in=_DELIVERED)),
        read=Count("id", filter=Q(message__status=Status.READ)),
        failed=Count("id", filter=failed & ~skip_codes),
        skipped_messages=Count("id", filter=failed & skip_codes),
    )
    replied = (
        Message.objects.filter(
            direction=Message.Direction.INBOUND,
            reply_to__campaign_audience__campaign_id=campaign.id,
        )
        .values("reply_to_id")
        .distinct()
        .count()
    )
    skipped = counts["skipped_rows"] + counts["skipped_messages"]
    sent, failed_count = counts["sent"], counts["failed"]
    return CampaignStats(
        recipients=counts["recipients"],
        pending=counts["pending"],
        messages=counts["messages"],
        queued=counts["queued"],
        sent=sent,
        delivered=counts["delivered"],
        read=counts["read"],
        failed=failed_count,
        replied=replied,
        skipped=skipped,
        delivery_rate=_rate(counts["delivered"], sent),
        read_rate=_rate(counts["read"], sent),
        reply_rate=_rate(replied, sent),
        failure_rate=_rate(failed_count, sent + failed_count),
        progress=_rate(sent + failed_count + skipped, counts["recipients"]),
        final=False,
    )


def campaign_stats(*, campaign: Campaign) -> CampaignStats:
    """The campaign's figures; for a completed campaign whose messages have been archived, the
    ones kept at completion."""
    stats = campaign_stats_compute(campaign=campaign)
    final = campaign.final_stats
    if (
        campaign.status == Campaign.Status.COMPLETED
        and final
        and stats["messages"] < int(final.get("messages", 0))
    ):
        return CampaignStats(**{**final, "final": True})  # type: ignore[typeddict-item]
    return stats
