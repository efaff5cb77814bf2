"""The campaign approval workflow, through its services and the admin actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, MessageTemplate
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def sender() -> User:
    return User.objects.create_user("sam", password="pw", is_staff=True)


@pytest.fixture
def approver() -> User:
    user = User.objects.create_user("alice", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="approve_campaign"))
    return User.objects.get(id=user.id)


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


def _admin_client(user: User) -> Client:
    for codename in ("view_campaign", "change_campaign"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(User.objects.get(id=user.id))
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
    client = _admin_client(sender)

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
