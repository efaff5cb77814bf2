"""Campaign use cases: the approval workflow. Admin actions and the API both call these."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign

User = AbstractBaseUser | AnonymousUser
APPROVE_PERMISSION = "campaigns.approve_campaign"


@transaction.atomic
def _campaign_move(*, campaign_id: int, to: str, reason: str = "", **fields: object) -> Campaign:
    campaign = Campaign.objects.select_for_update().get(id=campaign_id)
    if not campaign.can_move_to(to):
        raise ValidationError(
            f"A {campaign.get_status_display().lower()} campaign cannot become "
            f"{Campaign.Status(to).label.lower()}."
        )
    campaign.status = to
    campaign.status_reason = reason
    for name, value in fields.items():
        setattr(campaign, name, value)
    campaign.save(update_fields=["status", "status_reason", "updated_at", *fields])
    return campaign


def _require_approver(user: User) -> None:
    if not user.has_perm(APPROVE_PERMISSION):  # type: ignore[union-attr]
        raise PermissionDenied("Only approvers can approve or reject campaigns.")


def campaign_submit(*, campaign_id: int, user: User) -> Campaign:
    campaign = Campaign.objects.select_related("template").get(id=campaign_id)
    if not campaign.template.is_sendable:
        raise ValidationError(
            f"Template {campaign.template} is {campaign.template.status}; only approved "
            "templates can be sent."
        )
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.PENDING_APPROVAL,
        submitted_by=user if user.is_authenticated else None,
        submitted_at=timezone.now(),
    )


def campaign_approve(*, campaign_id: int, user: User) -> Campaign:
    _require_approver(user)
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.APPROVED,
        approved_by=user,
        approved_at=timezone.now(),
    )


def campaign_reject(*, campaign_id: int, user: User, reason: str) -> Campaign:
    _require_approver(user)
    if not reason.strip():
        raise ValidationError("Say why the campaign is rejected.")
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.REJECTED, reason=reason)


def campaign_schedule(*, campaign_id: int, when: datetime) -> Campaign:
    if when <= timezone.now():
        raise ValidationError("A campaign can only be scheduled in the future.")
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.SCHEDULED, scheduled_for=when)


def campaign_pause(*, campaign_id: int, reason: str = "") -> Campaign:
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.PAUSED, reason=reason)


def campaign_resume(*, campaign_id: int) -> Campaign:
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.RUNNING)


def campaign_cancel(*, campaign_id: int, reason: str = "") -> Campaign:
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.CANCELLED,
        reason=reason,
        finished_at=timezone.now(),
    )


def template_status_apply(
    *, waba_id: str, name: str, language: str, status: str, reason: str
) -> int:
    """Keep the copy of a provider template current; pause the campaigns it can no longer send.

    Returns the number of templates updated.
    """
    from campaigns.models import MessageTemplate

    if status not in MessageTemplate.Status.values:
        raise ValueError(f"Unknown template status {status!r}.")
    templates = MessageTemplate.objects.filter(channel__waba_id=waba_id, name=name)
    if language:
        templates = templates.filter(language=language)
    template_ids = list(templates.values_list("id", flat=True))
    MessageTemplate.objects.filter(id__in=template_ids).update(
        status=status, updated_at=timezone.now()
    )
    template_campaigns_pause(
        template_ids=template_ids, name=name, language=language, status=status, reason=reason
    )
    return len(template_ids)


def template_campaigns_pause(
    *, template_ids: list[int], name: str, language: str, status: str, reason: str
) -> None:
    """Pause the running and scheduled campaigns of templates that can no longer be sent."""
    from campaigns.models import MessageTemplate

    if status == MessageTemplate.Status.APPROVED:
        return
    why = f"Template {name} ({language}) is {status}" + (f": {reason}" if reason else ".")
    for campaign_id in Campaign.objects.filter(
        template_id__in=template_ids,
        status__in=(Campaign.Status.RUNNING, Campaign.Status.SCHEDULED),
    ).values_list("id", flat=True):
        campaign_pause(campaign_id=campaign_id, reason=why)
