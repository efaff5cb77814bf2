"""Campaign use cases: creation, edits, the approval workflow and completion.

Admin actions, the API and tasks all call these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.models import User as Person
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, MessageTemplate
from whatsapp_platform.models import Organization
from whatsapp_platform.roles import can_approve

# Who acts: a person (admin, session or basic auth), or an API client (None here).
User = AbstractBaseUser | AnonymousUser
APPROVE_PERMISSION = "campaigns.approve_campaign"

# An edit to one of these sends a pending, approved or scheduled campaign back to draft.
APPROVED_FIELDS = frozenset({"template", "scheduled_for"})
EDITABLE_FIELDS = frozenset({"name", "template", "scheduled_for", "failure_threshold"})
# Statuses whose content may still change; edits to the running or finished ones are refused.
EDITABLE_STATUSES = frozenset(
    {
        Campaign.Status.DRAFT,
        Campaign.Status.REJECTED,
        Campaign.Status.PENDING_APPROVAL,
        Campaign.Status.APPROVED,
        Campaign.Status.SCHEDULED,
    }
)
NEEDS_NEW_APPROVAL = frozenset(
    {Campaign.Status.PENDING_APPROVAL, Campaign.Status.APPROVED, Campaign.Status.SCHEDULED}
)


def _person(user: User | None) -> Person | None:
    """The person acting, or None for an API client or an anonymous caller."""
    return user if isinstance(user, Person) else None


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


def _require_sendable_template(template: MessageTemplate) -> None:
    if not template.is_sendable:
        raise ValidationError(
            f"Template {template} is {template.status}; only approved templates can be sent."
        )


def _require_approver(user: User | None, campaign: Campaign) -> None:
    person = _person(user)
    if person is None or not can_approve(person, campaign):
        raise PermissionDenied("Only approvers can approve or reject campaigns.")
    if campaign.submitted_by_id is not None and campaign.submitted_by_id == person.pk:
        raise PermissionDenied(
            "A campaign must be approved or rejected by someone other than its submitter."
        )


def _template_of(*, organization_id: int, template_id: int) -> MessageTemplate:
    template = MessageTemplate.objects.filter(
        id=template_id, organization_id=organization_id
    ).first()
    if template is None:
        raise ValidationError(f"The organization has no template {template_id}.")
    return template


def campaign_create(
    *,
    organization: Organization,
    template_id: int,
    name: str,
    scheduled_for: datetime | None = None,
    failure_threshold: int | None = None,
    user: User | None = None,
) -> Campaign:
    """A draft campaign sending one of the organization's templates on the template's channel."""
    if not name.strip():
        raise ValidationError("A campaign needs a name.")
    template = _template_of(organization_id=organization.id, template_id=template_id)
    campaign = Campaign(
        organization=organization,
        channel_id=template.channel_id,
        template=template,
        name=name.strip(),
        scheduled_for=scheduled_for,
        created_by=_person(user),
    )
    if failure_threshold is not None:
        campaign.failure_threshold = failure_threshold
    campaign.save()
    return campaign


def campaign_require_editable(campaign: Campaign) -> None:
    if campaign.status not in EDITABLE_STATUSES:
        raise ValidationError(
            f"A {campaign.get_status_display().lower()} campaign can no longer be changed."
        )


def campaign_back_to_draft(*, campaign: Campaign) -> Campaign:
    """An edited campaign needs a new approval: back to draft, approval forgotten.

    Called inside the edit's transaction with the campaign locked.
    """
    if campaign.status not in NEEDS_NEW_APPROVAL:
        return campaign
    campaign.status = Campaign.Status.DRAFT
    campaign.status_reason = "Changed after submission: submit it again for approval."
    campaign.submitted_by = None
    campaign.submitted_at = None
    campaign.approved_by = None
    campaign.approved_at = None
    campaign.save(
        update_fields=[
            "status",
            "status_reason",
            "submitted_by",
            "submitted_at",
            "approved_by",
            "approved_at",
            "updated_at",
        ]
    )
    return campaign


@transaction.atomic
def campaign_update(*, campaign_id: int, **changes: Any) -> Campaign:
    """Change a campaign's name, template (`template` or `template_id`), schedule or threshold.

    A change of template or schedule sends a pending, approved or scheduled campaign back to
    draft; values equal to the current ones change nothing.
    """
    campaign = Campaign.objects.select_for_update().get(id=campaign_id)
    if "template_id" in changes:
        changes["template"] = _template_of(
            organization_id=campaign.organization_id, template_id=changes.pop("template_id")
        )
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ValidationError(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    template = changes.get("template")
    if template is not None and template.organization_id != campaign.organization_id:
        raise ValidationError(f"The organization has no template {template.id}.")
    if "name" in changes and not str(changes["name"]).strip():
        raise ValidationError("A campaign needs a name.")
    changed = {name for name, value in changes.items() if getattr(campaign, name) != value}
    if not changed:
        return campaign
    campaign_require_editable(campaign)
    for name in changed:
        setattr(campaign, name, changes[name])
    update_fields = [*changed, "updated_at"]
    if "template" in changed:
        campaign.channel_id = campaign.template.channel_id
        update_fields.append("channel")
    campaign.save(update_fields=update_fields)
    if changed & APPROVED_FIELDS:
        campaign_back_to_draft(campaign=campaign)
    return campaign


def campaign_submit(*, campaign_id: int, user: User | None) -> Campaign:
    campaign = Campaign.objects.select_related("template").get(id=campaign_id)
    _require_sendable_template(campaign.template)
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.PENDING_APPROVAL,
        submitted_by=_person(user),
        submitted_at=timezone.now(),
    )


def campaign_approve(*, campaign_id: int, user: User | None) -> Campaign:
    _require_approver(user, Campaign.objects.get(id=campaign_id))
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.APPROVED,
        approved_by=_person(user),
        approved_at=timezone.now(),
    )


def campaign_reject(*, campaign_id: int, user: User | None, reason: str) -> Campaign:
    _require_approver(user, Campaign.objects.get(id=campaign_id))
    if not reason.strip():
        raise ValidationError("Say why the campaign is rejected.")
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.REJECTED, reason=reason)


def campaign_schedule(*, campaign_id: int, when: datetime) -> Campaign:
    if when <= timezone.now():
        raise ValidationError("A campaign can only be scheduled in the future.")
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.SCHEDULED, scheduled_for=when)


def _start_sending(campaign_id: int) -> None:
    from campaigns.fanout import fan_out_start

    transaction.on_commit(lambda: fan_out_start(campaign_id=campaign_id))


@transaction.atomic
def campaign_launch(*, campaign_id: int) -> Campaign:
    """Start sending an approved or scheduled campaign now."""
    campaign = Campaign.objects.select_for_update().select_related("template").get(id=campaign_id)
    if campaign.approved_at is None or campaign.status not in (
        Campaign.Status.APPROVED,
        Campaign.Status.SCHEDULED,
    ):
        raise ValidationError(
            f"A {campaign.get_status_display().lower()} campaign cannot be launched: only "
            "approved campaigns send."
        )
    _require_sendable_template(campaign.template)
    campaign = _campaign_move(
        campaign_id=campaign_id, to=Campaign.Status.RUNNING, started_at=timezone.now()
    )
    _start_sending(campaign_id)
    return campaign


def campaigns_launch_due() -> int:
    """Launch the scheduled campaigns whose time has come; returns how many were launched.

    One whose template can no longer be sent is paused with the reason instead.
    """
    launched = 0
    due = Campaign.objects.filter(
        status=Campaign.Status.SCHEDULED, scheduled_for__lte=timezone.now()
    ).order_by("scheduled_for", "id")
    for campaign_id in due.values_list("id", flat=True):
        try:
            campaign_launch(campaign_id=campaign_id)
        except ValidationError as exc:
            try:
                campaign_pause(campaign_id=campaign_id, reason="; ".join(exc.messages))
            except ValidationError:
                continue  # changed meanwhile (cancelled, edited): nothing to launch
        else:
            launched += 1
    return launched


def campaign_pause(*, campaign_id: int, reason: str = "") -> Campaign:
    return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.PAUSED, reason=reason)


@transaction.atomic
def campaign_resume(*, campaign_id: int) -> Campaign:
    """Sending goes on; a campaign paused before its scheduled time is scheduled again."""
    campaign = Campaign.objects.select_for_update().select_related("template").get(id=campaign_id)
    if campaign.status == Campaign.Status.PAUSED:
        _require_sendable_template(campaign.template)
        if (
            campaign.started_at is None
            and campaign.scheduled_for is not None
            and campaign.scheduled_for > timezone.now()
        ):
            return _campaign_move(campaign_id=campaign_id, to=Campaign.Status.SCHEDULED)
    campaign = _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.RUNNING,
        started_at=campaign.started_at or timezone.now(),
    )
    _start_sending(campaign_id)
    return campaign


def campaign_cancel(*, campaign_id: int, reason: str = "") -> Campaign:
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.CANCELLED,
        reason=reason,
        finished_at=timezone.now(),
    )


@transaction.atomic
def campaign_complete(campaign_id: int) -> Campaign:
    """The last recipient is sent: completed, with its figures kept in final_stats.

    Safe to call again: a completed campaign is left as it is.
    """
    from campaigns.stats import campaign_stats_compute

    campaign = Campaign.objects.select_for_update().get(id=campaign_id)
    if campaign.status == Campaign.Status.COMPLETED:
        return campaign
    return _campaign_move(
        campaign_id=campaign_id,
        to=Campaign.Status.COMPLETED,
        finished_at=timezone.now(),
        final_stats=campaign_stats_compute(campaign=campaign),
    )


def template_status_apply(
    *, organization_id: int, waba_id: str, name: str, language: str, status: str, reason: str
) -> int:
    """Keep the organization's copies of a provider template current; pause the campaigns it
    can no longer send.

    Only the organization's own templates: another organization may name the same WABA id
    (the same account connected twice, or a mistake), and its copies are its own.
    Returns the number of templates updated.
    """
    if status not in MessageTemplate.Status.values:
        raise ValueError(f"Unknown template status {status!r}.")
    templates = MessageTemplate.objects.filter(
        organization_id=organization_id, channel__waba_id=waba_id, name=name
    )
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
