"""People act in the admin and the staff APIs on their own organizations, as their role allows."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign
from conversations.models import Contact
from tests.factories import CampaignFactory, MessageTemplateFactory
from tests.isolation.conftest import change_url, member
from whatsapp_platform.models import Channel, Membership

pytestmark = pytest.mark.django_db


def changelist(client: Client, app_model: str) -> str:
    response = client.get(reverse(f"admin:{app_model}_changelist"))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("role", [r.value for r in Membership.Role])
def test_every_role_sees_its_own_organizations_rows_only(tenants, role) -> None:
    acme, globex = tenants
    client = member(role, acme.organization)

    campaigns = changelist(client, "campaigns_campaign")
    messages = changelist(client, "conversations_message")
    organizations = changelist(client, "whatsapp_platform_organization")

    assert "campaign of Acme" in campaigns
    assert "campaign of Globex" not in campaigns
    assert change_url(acme.message) in messages
    assert change_url(globex.message) not in messages
    assert "Globex" not in organizations
    # Another organization's row is not found at all.
    assert client.get(change_url(globex.campaign)).status_code == 302
    assert client.get(change_url(globex.channel)).status_code == 302


def test_a_viewer_only_views(tenants) -> None:
    acme, _ = tenants
    client = member("viewer", acme.organization)

    page = client.get(change_url(acme.channel)).content.decode()
    saved = client.post(change_url(acme.channel), {"name": "Renamed"})
    added = client.get(reverse("admin:campaigns_campaign_add"))

    assert "View channel" in page
    assert 'name="_save"' not in page
    assert saved.status_code == 403
    assert Channel.objects.get(id=acme.channel.id).name == acme.channel.name
    assert added.status_code == 403


def test_a_sender_drafts_campaigns_of_its_organization_and_cannot_approve(tenants) -> None:
    acme, _ = tenants
    client = member("sender", acme.organization)
    draft = CampaignFactory(
        name="draft of Acme", template=MessageTemplateFactory(channel=acme.channel)
    )

    add_page = client.get(reverse("admin:campaigns_campaign_add")).content.decode()
    draft_page = client.get(change_url(draft)).content.decode()
    pending_page = client.get(change_url(acme.campaign)).content.decode()
    approval = client.post(f"/api/campaigns/{acme.campaign.id}/approve/")
    channel_saved = client.post(change_url(acme.channel), {"name": "Renamed"})

    assert f'value="{acme.organization.id}"' in add_page
    assert "Globex" not in add_page  # foreign-key choices are its organization's only
    assert 'name="_save"' in draft_page
    assert 'name="_save"' not in pending_page  # past draft, approval decides
    assert approval.status_code == 403
    assert channel_saved.status_code == 403
    acme.campaign.refresh_from_db()
    assert acme.campaign.status == Campaign.Status.PENDING_APPROVAL


def test_an_approver_approves_its_organizations_campaigns_only(tenants) -> None:
    acme, globex = tenants
    client = member("approver", acme.organization)

    ours = client.post(f"/api/campaigns/{acme.campaign.id}/approve/")
    theirs = client.post(f"/api/campaigns/{globex.campaign.id}/approve/")

    assert ours.status_code == 200, ours.content
    assert ours.json()["status"] == "approved"
    assert theirs.status_code == 404
    globex.campaign.refresh_from_db()
    assert globex.campaign.status == Campaign.Status.PENDING_APPROVAL


def test_an_approver_of_another_organization_cannot_approve_through_the_admin(tenants) -> None:
    acme, globex = tenants
    client = member("approver", acme.organization)

    client.post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "approve", "_selected_action": [globex.campaign.id]},
    )

    globex.campaign.refresh_from_db()
    assert globex.campaign.status == Campaign.Status.PENDING_APPROVAL


def test_an_admin_changes_everything_in_its_organization_only(tenants) -> None:
    acme, globex = tenants
    client = member("admin", acme.organization)

    page = client.get(change_url(acme.channel)).content.decode()
    approval = client.post(f"/api/campaigns/{acme.campaign.id}/approve/")
    other = client.post(f"/api/campaigns/{globex.campaign.id}/approve/")

    assert 'name="_save"' in page
    assert "EAAG" not in page
    assert approval.status_code == 200, approval.content
    assert other.status_code == 404


def test_a_superuser_sees_every_organization(tenants) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))

    campaigns = changelist(client, "campaigns_campaign")

    assert "campaign of Acme" in campaigns
    assert "campaign of Globex" in campaigns


def test_a_staff_user_without_membership_or_permission_sees_nothing(tenants) -> None:
    client = Client()
    client.force_login(User.objects.create_user("stranger", is_staff=True))

    response = client.get(reverse("admin:campaigns_campaign_changelist"))

    assert response.status_code == 403


def test_a_member_erases_only_its_own_organizations_contacts_and_runs_no_archival(
    tenants,
) -> None:
    acme, globex = tenants
    admin_client = member("admin", acme.organization)
    viewer_client = member("viewer", acme.organization)

    theirs = admin_client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": globex.message.contact_id},
        content_type="application/json",
    )
    as_viewer = viewer_client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": acme.message.contact_id},
        content_type="application/json",
    )
    trigger = admin_client.post("/api/admin/archival/trigger?job_type=messages")

    assert theirs.status_code == 404
    assert as_viewer.status_code == 404
    assert trigger.status_code == 403
    assert (
        Contact.objects.filter(id__in=[globex.message.contact_id, acme.message.contact_id]).count()
        == 2
    )
