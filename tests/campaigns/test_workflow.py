"""The campaign approval workflow, through its services and the admin actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, MessageTemplate
from tests.factories import CampaignFactory, MessageTemplateFactory
from whatsapp_platform.models import Membership

pytestmark = pytest.mark.django_db


def test_a_campaign_goes_from_draft_to_approved_with_who_and_when(sender, approver) -> None:
    campaign = CampaignFactory()

    services.campaign_submit(campaign_id=campaign.id, user=sender)
    services.campaign_approve(campaign_id=campaign.id, user=approver)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert campaign.submitted_by == sender
    assert campaign.approved_by == approver
    assert campaign.submitted_at is not None
    assert campaign.approved_at is not None


def test_only_approvers_approve(sender) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)

    with pytest.raises(PermissionDenied):
        services.campaign_approve(campaign_id=campaign.id, user=sender)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_a_draft_cannot_be_approved_without_being_submitted(approver) -> None:
    campaign = CampaignFactory()

    with pytest.raises(ValidationError, match="draft campaign cannot become approved"):
        services.campaign_approve(campaign_id=campaign.id, user=approver)


def test_a_campaign_with_an_unapproved_template_cannot_be_submitted(sender) -> None:
    campaign = CampaignFactory(template__status=MessageTemplate.Status.PAUSED)

    with pytest.raises(ValidationError, match="paused"):
        services.campaign_submit(campaign_id=campaign.id, user=sender)


def test_rejection_needs_a_reason_and_can_be_resubmitted(sender, approver) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)

    with pytest.raises(ValidationError):
        services.campaign_reject(campaign_id=campaign.id, user=approver, reason=" ")
    services.campaign_reject(campaign_id=campaign.id, user=approver, reason="Wrong audience")
    campaign.refresh_from_db()
    assert campaign.status_reason == "Wrong audience"
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_scheduling_needs_a_future_time(sender, approver) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    services.campaign_approve(campaign_id=campaign.id, user=approver)

    with pytest.raises(ValidationError):
        services.campaign_schedule(campaign_id=campaign.id, when=timezone.now())
    services.campaign_schedule(campaign_id=campaign.id, when=timezone.now() + timedelta(hours=1))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED


def test_a_cancelled_campaign_stays_cancelled() -> None:
    campaign = CampaignFactory()
    services.campaign_cancel(campaign_id=campaign.id)

    with pytest.raises(ValidationError):
        services.campaign_resume(campaign_id=campaign.id)


def _admin_client(user: User, role: str | None = None, campaign: Campaign | None = None) -> Client:
    """Signed in to the admin; with a role, a member of the campaign's organization."""
    if role is not None and campaign is not None:
        Membership.objects.create(user=user, organization=campaign.organization, role=role)
    client = Client()
    client.force_login(user)
    return client


def test_admin_approve_action_works_for_approvers(sender, approver) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)

    response = _admin_client(approver).post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "approve", "_selected_action": [campaign.id]},
        follow=True,
    )

    assert "Approved 1 campaign(s)." in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_admin_does_not_offer_approval_to_senders(sender) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    client = _admin_client(sender, "sender", campaign)

    page = client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "approve", "_selected_action": [campaign.id]},
    )

    assert 'value="approve"' not in page
    assert 'value="submit"' in page
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_admin_action_reports_refused_transitions(approver) -> None:
    campaign = CampaignFactory()

    response = _admin_client(approver).post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "approve", "_selected_action": [campaign.id]},
        follow=True,
    )

    assert "draft campaign cannot become approved" in response.content.decode()


# --- Who approves ---------------------------------------------------------------------------


def test_an_approver_cannot_approve_a_campaign_they_submitted(approver, second_approver) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=approver)

    with pytest.raises(PermissionDenied, match="someone other than its submitter"):
        services.campaign_approve(campaign_id=campaign.id, user=approver)
    with pytest.raises(PermissionDenied, match="someone other than its submitter"):
        services.campaign_reject(campaign_id=campaign.id, user=approver, reason="No")
    services.campaign_approve(campaign_id=campaign.id, user=second_approver)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert campaign.approved_by == second_approver


# --- Edits send it back to draft ------------------------------------------------------------


def _approved(sender: User, approver: User) -> Campaign:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    services.campaign_approve(campaign_id=campaign.id, user=approver)
    return campaign


def test_a_new_template_sends_an_approved_campaign_back_to_draft(sender, approver) -> None:
    campaign = _approved(sender, approver)
    other = MessageTemplateFactory(channel=campaign.channel)

    services.campaign_update(campaign_id=campaign.id, template_id=other.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.template == other
    assert (campaign.approved_by, campaign.approved_at, campaign.submitted_by) == (None, None, None)
    assert "submit it again" in campaign.status_reason


def test_a_new_schedule_sends_a_scheduled_campaign_back_to_draft(sender, approver) -> None:
    campaign = _approved(sender, approver)
    services.campaign_schedule(campaign_id=campaign.id, when=timezone.now() + timedelta(hours=1))

    services.campaign_update(
        campaign_id=campaign.id, scheduled_for=timezone.now() + timedelta(hours=3)
    )

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_an_edit_sends_a_pending_campaign_back_to_draft(sender) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)

    services.campaign_update(
        campaign_id=campaign.id, scheduled_for=timezone.now() + timedelta(days=1)
    )

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_a_new_name_or_the_same_values_keep_the_approval(sender, approver) -> None:
    campaign = _approved(sender, approver)

    services.campaign_update(
        campaign_id=campaign.id, name="Spring sale", template_id=campaign.template_id
    )

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED
    assert campaign.name == "Spring sale"


def test_a_running_campaign_cannot_be_edited(sender, approver) -> None:
    campaign = _approved(sender, approver)
    services.campaign_launch(campaign_id=campaign.id)

    with pytest.raises(ValidationError, match="running campaign can no longer be changed"):
        services.campaign_update(
            campaign_id=campaign.id, scheduled_for=timezone.now() + timedelta(days=1)
        )


def test_another_organizations_template_is_refused() -> None:
    campaign = CampaignFactory()
    foreign = MessageTemplateFactory()

    with pytest.raises(ValidationError, match="has no template"):
        services.campaign_update(campaign_id=campaign.id, template_id=foreign.id)
    campaign.refresh_from_db()
    assert campaign.template_id != foreign.id


# --- Launch: only approved campaigns send ---------------------------------------------------


def test_launch_starts_an_approved_campaign_and_its_fan_out_after_commit(
    sender, approver, django_capture_on_commit_callbacks
) -> None:
    campaign = _approved(sender, approver)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.campaign_launch(campaign_id=campaign.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING
    assert campaign.started_at is not None
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    "status",
    [
        Campaign.Status.DRAFT,
        Campaign.Status.PENDING_APPROVAL,
        Campaign.Status.REJECTED,
        Campaign.Status.CANCELLED,
    ],
)
def test_a_campaign_that_is_not_approved_does_not_launch(
    status, django_capture_on_commit_callbacks
) -> None:
    campaign = CampaignFactory(status=status)

    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(ValidationError, match="only approved campaigns send"),
    ):
        services.campaign_launch(campaign_id=campaign.id)
    campaign.refresh_from_db()
    assert campaign.status == status
    assert callbacks == []


def test_a_campaign_whose_template_was_paused_does_not_launch(sender, approver) -> None:
    campaign = _approved(sender, approver)
    MessageTemplate.objects.filter(id=campaign.template_id).update(
        status=MessageTemplate.Status.PAUSED
    )

    with pytest.raises(ValidationError, match="only approved templates can be sent"):
        services.campaign_launch(campaign_id=campaign.id)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_resume_restarts_sending_but_not_with_a_paused_template(
    sender, approver, django_capture_on_commit_callbacks
) -> None:
    campaign = _approved(sender, approver)
    services.campaign_launch(campaign_id=campaign.id)
    services.campaign_pause(campaign_id=campaign.id, reason="Checking")
    MessageTemplate.objects.filter(id=campaign.template_id).update(
        status=MessageTemplate.Status.DISABLED
    )
    with pytest.raises(ValidationError, match="disabled"):
        services.campaign_resume(campaign_id=campaign.id)
    MessageTemplate.objects.filter(id=campaign.template_id).update(
        status=MessageTemplate.Status.APPROVED
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.campaign_resume(campaign_id=campaign.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.RUNNING
    assert len(callbacks) == 1


def test_a_scheduled_campaign_paused_before_its_time_is_scheduled_again_on_resume(
    sender, approver, django_capture_on_commit_callbacks
) -> None:
    campaign = _approved(sender, approver)
    when = timezone.now() + timedelta(hours=1)
    services.campaign_schedule(campaign_id=campaign.id, when=when)
    services.campaign_pause(campaign_id=campaign.id, reason="Template paused")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.campaign_resume(campaign_id=campaign.id)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.SCHEDULED
    assert campaign.scheduled_for == when
    assert campaign.started_at is None
    assert callbacks == []


# --- Scheduled launch -----------------------------------------------------------------------


def test_scheduled_campaigns_launch_when_their_time_has_come(sender, approver) -> None:
    due = _approved(sender, approver)
    later = _approved(sender, approver)
    services.campaign_schedule(campaign_id=due.id, when=timezone.now() + timedelta(hours=1))
    services.campaign_schedule(campaign_id=later.id, when=timezone.now() + timedelta(hours=2))
    Campaign.objects.filter(id=due.id).update(scheduled_for=timezone.now() - timedelta(minutes=1))

    assert services.campaigns_launch_due() == 1
    assert services.campaigns_launch_due() == 0

    due.refresh_from_db()
    later.refresh_from_db()
    assert due.status == Campaign.Status.RUNNING
    assert later.status == Campaign.Status.SCHEDULED


def test_a_due_campaign_with_an_unsendable_template_is_paused_with_the_reason(
    sender, approver
) -> None:
    campaign = _approved(sender, approver)
    services.campaign_schedule(campaign_id=campaign.id, when=timezone.now() + timedelta(hours=1))
    Campaign.objects.filter(id=campaign.id).update(scheduled_for=timezone.now())
    MessageTemplate.objects.filter(id=campaign.template_id).update(
        status=MessageTemplate.Status.REJECTED
    )

    assert services.campaigns_launch_due() == 0

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PAUSED
    assert "rejected" in campaign.status_reason


def test_the_beat_schedule_launches_due_campaigns_every_minute(settings) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["launch-due-campaigns"]

    assert entry == {"task": "campaigns.tasks.launch_due_campaigns", "schedule": 60.0}


# --- Admin: launch and edits ---------------------------------------------------------------


def test_admin_launch_action_refuses_a_draft_with_a_message(approver) -> None:
    campaign = CampaignFactory()

    response = _admin_client(approver).post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "launch", "_selected_action": [campaign.id]},
        follow=True,
    )

    assert response.status_code == 200
    assert "only approved campaigns send" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT


def test_admin_edit_of_an_approved_campaigns_template_sends_it_back_to_draft(
    sender, approver
) -> None:
    campaign = _approved(sender, approver)
    other = MessageTemplateFactory(channel=campaign.channel)

    response = _admin_client(approver).post(
        reverse("admin:campaigns_campaign_change", args=(campaign.id,)),
        {
            "name": campaign.name,
            "template": other.id,
            "scheduled_for_0": "",
            "scheduled_for_1": "",
            "failure_threshold": 50,
        },
    )

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.template == other
    assert campaign.status == Campaign.Status.DRAFT
