"""Reads of campaigns, always scoped to one organization, and the preview before approval."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone

from campaigns.models import AudienceImport, Campaign, CampaignAudience, MessageTemplate
from conversations.models import Conversation
from whatsapp_platform.models import Organization

# The customer-service window, and the messaging tier's rolling period.
WINDOW = timedelta(hours=24)
# What WhatsApp accepts as a wa_id: E.164 digits without the plus.
WA_ID_PATTERN = r"^[1-9][0-9]{6,14}$"


def campaign_list(*, organization: Organization) -> QuerySet[Campaign]:
    return Campaign.tenant.for_organization(organization).order_by("-id")


def campaign_get(*, organization: Organization, campaign_id: int) -> Campaign | None:
    return (
        Campaign.tenant.for_organization(organization)
        .select_related("template", "channel")
        .filter(id=campaign_id)
        .first()
    )


def audience_import_list(
    *, organization: Organization, campaign_id: int
) -> QuerySet[AudienceImport]:
    """A campaign's background audience imports, newest first."""
    return (
        AudienceImport.tenant.for_organization(organization)
        .filter(campaign_id=campaign_id)
        .order_by("-id")
    )


def audience_import_get(
    *, organization: Organization, campaign_id: int, import_id: int
) -> AudienceImport | None:
    return (
        audience_import_list(organization=organization, campaign_id=campaign_id)
        .filter(id=import_id)
        .first()
    )


@dataclass(frozen=True)
class CampaignPreview:
    """Who a campaign will reach, and how much of the channel's messaging tier it takes.

    The exclusions are counted in this order, each recipient once: opted out, invalid number,
    held by Meta's marketing limit, within the marketing frequency cap.
    """

    recipients: int
    opted_out: int
    invalid_numbers: int
    marketing_held: int
    frequency_capped: int
    eligible: int
    # Eligible recipients that open a new business-initiated conversation: no open customer
    # window, and no conversation the channel opened with them in the last 24 hours.
    new_conversations: int
    messaging_tier: int | None  # None: unlimited
    tier_used: int  # conversations the channel opened in the last 24 hours
    tier_remaining: int | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def campaign_preview(*, campaign: Campaign) -> CampaignPreview:
    now = timezone.now()
    since = now - WINDOW
    is_marketing = campaign.template.category == MessageTemplate.Category.MARKETING
    cap_since = now - timedelta(hours=settings.MARKETING_FREQUENCY_CAP_HOURS)

    # Each recipient's first reason to be left out, in one pass over the audience.
    reasons = [
        When(
            Q(state=CampaignAudience.State.SKIPPED) | Q(contact__opted_out_at__isnull=False),
            then=Value("opted_out"),
        ),
        When(
            Q(contact__wa_id__isnull=True) | ~Q(contact__wa_id__regex=WA_ID_PATTERN),
            then=Value("invalid_numbers"),
        ),
    ]
    if is_marketing:
        reasons += [
            When(contact__marketing_held_until__gt=now, then=Value("marketing_held")),
            When(contact__last_marketing_at__gte=cap_since, then=Value("frequency_capped")),
        ]
    initiated_recently = Conversation.objects.filter(
        channel_id=campaign.channel_id,
        contact_id=OuterRef("contact_id"),
        business_initiated_at__gte=since,
    )
    groups = (
        CampaignAudience.objects.filter(campaign_id=campaign.id)
        .annotate(
            reason=Case(*reasons, default=Value("eligible"), output_field=CharField()),
            # A new business-initiated conversation: no open window, none opened in 24 hours.
            opens=Case(
                When(
                    Q(contact__last_inbound_at__gte=since) | Exists(initiated_recently),
                    then=Value(False),
                ),
                default=Value(True),
                output_field=BooleanField(),
            ),
        )
        .values("reason", "opens")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts = dict.fromkeys(
        (
            "recipients",
            "opted_out",
            "invalid_numbers",
            "marketing_held",
            "frequency_capped",
            "eligible",
            "new_conversations",
        ),
        0,
    )
    for group in groups:
        counts["recipients"] += group["count"]
        counts[group["reason"]] += group["count"]
        if group["reason"] == "eligible" and group["opens"]:
            counts["new_conversations"] += group["count"]
    tier = None if campaign.channel.messaging_tier is None else int(campaign.channel.messaging_tier)
    tier_used = Conversation.objects.filter(
        channel_id=campaign.channel_id, business_initiated_at__gte=since
    ).count()
    remaining = None if tier is None else max(tier - tier_used, 0)
    warnings = []
    if remaining is not None and counts["new_conversations"] > remaining:
        warnings.append(
            f"The campaign opens {counts['new_conversations']} new conversations, but the "
            f"channel has {remaining} of its {tier} per 24 hours left: "
            f"{counts['new_conversations'] - remaining} recipients would not be reached now."
        )
    if counts["eligible"] == 0:
        warnings.append("No recipient can receive this campaign.")
    return CampaignPreview(
        **counts,
        messaging_tier=tier,
        tier_used=tier_used,
        tier_remaining=remaining,
        warnings=warnings,
    )
