"""Staff without a membership, and members acting past their role, in the admin and the staff
APIs: Django permissions given directly grant nothing, platform-wide pages are the
superusers', and every admin action checks the role of each row's own organization."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from archival.models import ArchiveRun
from campaigns.models import Campaign, MessageTemplate
from conversations.models import Contact, Conversation
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageTemplateFactory,
)
from tests.isolation.conftest import change_url, member
from webhooks.models import WebhookEvent
from webhooks.services import webhook_event_process
from webhooks.signature import meta_signature
from whatsapp_platform.models import Channel, Membership
from whatsapp_platform.monitoring.models import TaskFailure

pytestmark = pytest.mark.django_db


def staff_with_permissions(*codenames: str) -> Client:
    """A staff user given Django permissions directly, with no membership anywhere."""
    user = User.objects.create_user("platform-staff", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def superuser() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def run_action(client: Client, obj: object, action: str) -> None:
    opts = obj._meta  # type: ignore[attr-defined]
    client.post(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        {"action": action, "_selected_action": [obj.pk]},  # type: ignore[attr-defined]
    )


def _csv(text: str) -> object:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("audience.csv", text.encode(), content_type="text/csv")


# --- 1. Django permissions without a membership ------------------------------------------


@pytest.mark.parametrize(
    ("app_model", "codename"),
    [
        ("campaigns_campaign", "view_campaign"),
        ("conversations_message", "view_message"),
        ("whatsapp_platform_organization", "view_organization"),
        ("whatsapp_platform_channel", "change_channel"),
        ("monitoring_campaignfunnel", "view_campaignfunnel"),
        ("conversations_organizationaiusage", "view_organizationaiusage"),
    ],
)
def test_django_permissions_without_a_membership_show_no_organizations_rows(
    tenants, app_model, codename
) -> None:
    client = staff_with_permissions(codename)

    response = client.get(reverse(f"admin:{app_model}_changelist"))

    assert response.status_code == 403
    assert "Acme" not in response.content.decode()
    assert "Globex" not in response.content.decode()


def test_django_permissions_do_not_widen_a_members_organizations(tenants) -> None:
    acme, _ = tenants
    client = member("viewer", acme.organization)
    user = User.objects.get(username=f"viewer-{acme.organization.slug}")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["change_channel"]))

    page = client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    saved = client.post(change_url(acme.channel), {"name": "Renamed"})

    assert "campaign of Acme" in page
    assert "campaign of Globex" not in page
    assert saved.status_code == 403
    assert Channel.objects.get(id=acme.channel.id).name == acme.channel.name


def test_the_approve_permission_without_a_membership_approves_nothing(tenants) -> None:
    acme, globex = tenants
    client = staff_with_permissions("approve_campaign", "view_campaign", "change_campaign")

    api = client.post(f"/api/campaigns/{acme.campaign.id}/approve/")
    run_action(client, globex.campaign, "approve")

    assert api.status_code in (403, 404)
    assert api.json()["detail"]
    for campaign in (acme.campaign, globex.campaign):
        campaign.refresh_from_db()
        assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_platform_staff_without_a_membership_erase_no_contact(tenants) -> None:
    acme, _ = tenants
    client = staff_with_permissions("delete_contact")

    response = client.post(
        "/api/admin/archival/erase-contact",
        {"contact_id": acme.message.contact_id},
        content_type="application/json",
    )

    assert response.status_code == 404
    assert response.json()["error"]
    assert Contact.objects.filter(id=acme.message.contact_id).exists()


@pytest.mark.parametrize(
    "app_model",
    [
        "conversations_contact",
        "conversations_message",
        "campaigns_campaign",
        "campaigns_messagetemplate",
        "whatsapp_platform_channel",
    ],
)
def test_a_members_list_filters_name_its_own_organizations_only(tenants, app_model) -> None:
    acme, _ = tenants
    ContactFactory(organization=acme.organization)
    client = member("admin", acme.organization)

    page = client.get(reverse(f"admin:{app_model}_changelist")).content.decode()

    assert "Acme" in page  # the filter names its own organization or channel
    assert "Globex" not in page


def test_a_member_sees_its_own_organizations_ai_usage_only(tenants) -> None:
    acme, _ = tenants
    client = member("viewer", acme.organization)

    response = client.get(reverse("admin:conversations_organizationaiusage_changelist"))

    assert response.status_code == 200
    assert "Acme" in response.content.decode()
    assert "Globex" not in response.content.decode()


# --- 2. Platform-wide pages ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "codename"),
    [
        ("/admin/archival/archiverun/", "view_archiverun"),
        ("/admin/archival/archivebatch/", "view_archivebatch"),
        ("/admin/monitoring/taskfailure/", "view_taskfailure"),
        ("/admin/django_celery_beat/periodictask/", "change_periodictask"),
        ("/admin/auth/user/", "change_user"),
    ],
)
def test_platform_pages_are_for_superusers_whatever_permissions_staff_hold(path, codename) -> None:
    ArchiveRun.objects.create(job_type=ArchiveRun.JobType.MESSAGES)
    TaskFailure.objects.create(task="conversations.deliver", kind=TaskFailure.Kind.FAILED)

    assert staff_with_permissions(codename).get(path).status_code == 403
    assert superuser().get(path).status_code == 200


@pytest.mark.parametrize("role", ["admin", "viewer"])
@pytest.mark.parametrize("path", ["/admin/archival/archiverun/", "/admin/monitoring/taskfailure/"])
def test_members_see_no_platform_pages(tenants, role, path) -> None:
    acme, _ = tenants

    assert member(role, acme.organization).get(path).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/monitoring/dashboard",
        "/monitoring/dashboard/data",
        "/monitoring/summary",
        "/monitoring/alerts",
        "/monitoring/dead-letters/",
    ],
)
def test_members_and_platform_staff_see_no_platform_wide_monitoring(tenants, path) -> None:
    acme, _ = tenants
    for client in (member("admin", acme.organization), staff_with_permissions()):
        response = client.get(path)

        assert response.status_code in (401, 403), (path, response.status_code)
        assert "campaign of Globex" not in response.content.decode()


@pytest.mark.parametrize("action", ["redrive", "purge"])
def test_members_cannot_redrive_or_purge_dead_letters(tenants, action) -> None:
    acme, _ = tenants

    response = member("admin", acme.organization).post(
        f"/monitoring/dead-letters/{action}/", {"all": True}, content_type="application/json"
    )

    assert response.status_code == 403
    assert response.json()["detail"]


def test_a_member_sees_its_own_webhook_events_and_replays_none(tenants) -> None:
    acme, globex = tenants
    ours = WebhookEvent.objects.create(
        provider="meta", organization=acme.organization, body="{}", dedupe_key="acme-1"
    )
    theirs = WebhookEvent.objects.create(
        provider="meta", organization=globex.organization, body="{}", dedupe_key="globex-1"
    )
    # Unroutable: no organization to show it to.
    unroutable = WebhookEvent.objects.create(provider="meta", body="{}", dedupe_key="unroutable")

    page = member("admin", acme.organization).get(reverse("admin:webhooks_webhookevent_changelist"))

    content = page.content.decode()
    assert page.status_code == 200
    assert change_url(ours) in content
    assert change_url(theirs) not in content
    assert change_url(unroutable) not in content
    assert 'value="replay"' not in content
    assert (
        'value="replay"'
        in superuser().get(reverse("admin:webhooks_webhookevent_changelist")).content.decode()
    )


# --- 3. Admin actions check each row's role -----------------------------------------------


@pytest.mark.parametrize(
    ("role", "action", "start"),
    [
        ("viewer", "launch", Campaign.Status.APPROVED),
        ("approver", "launch", Campaign.Status.APPROVED),
        ("sender", "launch", Campaign.Status.APPROVED),
        ("viewer", "cancel", Campaign.Status.DRAFT),
        ("viewer", "submit", Campaign.Status.DRAFT),
        ("viewer", "pause", Campaign.Status.SCHEDULED),
    ],
)
def test_a_campaign_action_needs_a_role_that_may_change_the_campaign(
    tenants, role, action, start
) -> None:
    acme, _ = tenants
    campaign = CampaignFactory(
        template=acme.campaign.template,
        status=start,
        scheduled_for=timezone.now(),
        approved_at=timezone.now(),
    )

    run_action(member(role, acme.organization), campaign, action)

    campaign.refresh_from_db()
    assert campaign.status == start


def test_an_admin_launches_its_organizations_campaign_only(tenants) -> None:
    acme, globex = tenants
    approved = {"status": Campaign.Status.APPROVED, "approved_at": timezone.now()}
    ours = CampaignFactory(template=acme.campaign.template, **approved)
    theirs = CampaignFactory(template=globex.campaign.template, **approved)
    client = member("admin", acme.organization)

    run_action(client, ours, "launch")
    run_action(client, theirs, "launch")

    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert ours.status == Campaign.Status.RUNNING
    assert theirs.status == Campaign.Status.APPROVED


def test_a_viewer_neither_hands_over_conversations_nor_clears_credential_errors(tenants) -> None:
    acme, _ = tenants
    conversation = Conversation.objects.create(
        organization=acme.organization, channel=acme.channel, contact=acme.message.contact
    )
    Channel.objects.filter(id=acme.channel.id).update(credential_error="Token expired")
    client = member("viewer", acme.organization)

    run_action(client, conversation, "hand_over")
    run_action(client, acme.channel, "clear_credential_error")

    conversation.refresh_from_db()
    assert conversation.needs_human is False
    assert Channel.objects.get(id=acme.channel.id).credential_error == "Token expired"


def test_the_audience_upload_of_another_organizations_campaign_imports_nothing(tenants) -> None:
    acme, globex = tenants
    draft = CampaignFactory(template=globex.campaign.template)
    client = member("admin", acme.organization)
    url = reverse("admin:campaigns_campaign_audience", args=[draft.id])

    upload = client.post(url, {"file": _csv("phone,1\n+447911123461,A-1\n")})
    not_a_number = client.post("/admin/campaigns/campaign/abc/audience/")

    change_not_a_number = client.get("/admin/campaigns/campaign/abc/change/")

    assert upload.status_code == 404
    assert draft.audience.count() == 0
    assert not_a_number.status_code == 404
    assert change_not_a_number.status_code == 302  # "does not exist", as for any unknown id


def test_rows_are_added_only_to_organizations_whose_role_allows_it(tenants) -> None:
    acme, globex = tenants
    client = member("admin", acme.organization)
    user = User.objects.get(username=f"admin-{acme.organization.slug}")
    Membership.objects.create(user=user, organization=globex.organization, role="viewer")

    form = client.get(reverse("admin:whatsapp_platform_channel_add")).content.decode()
    saved = client.post(
        reverse("admin:whatsapp_platform_channel_add"),
        {
            "organization": globex.organization.id,
            "name": "Planted",
            "provider": "console",
            "sender": "whatsapp:+15550001111",
            "messages_per_second": 80,
        },
    )

    assert f'value="{acme.organization.id}"' in form
    assert f'value="{globex.organization.id}"' not in form
    assert saved.status_code == 200  # the form again, with the choice refused
    assert not Channel.objects.filter(name="Planted").exists()


def test_sync_all_templates_syncs_the_members_own_channels_only(tenants) -> None:
    acme, _ = tenants
    client = member("admin", acme.organization)

    response = client.post(reverse("admin:campaigns_messagetemplate_sync"), follow=True)

    assert "Template sync queued for 1 channel(s)." in response.content.decode()


# --- 4. Template statuses on a shared WABA ------------------------------------------------


def _template_status_body(waba_id: str) -> str:
    """Meta's template status webhook: it names the WABA, never a phone number."""
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "changes": [
                        {
                            "field": "message_template_status_update",
                            "value": {
                                "event": "PAUSED",
                                "message_template_id": 1234567890,
                                "message_template_name": "order_update",
                                "message_template_language": "en_US",
                                "reason": "NONE",
                            },
                        }
                    ],
                }
            ],
        }
    )


def test_a_template_status_applies_to_the_organization_whose_channel_signed_it(tenants) -> None:
    acme, globex = tenants
    waba_id = "102290129340398"
    Channel.objects.filter(id=acme.channel.id).update(waba_id=waba_id, app_secret="acme-secret")
    # Globex's channel names the same WABA id (a misconfiguration), with its own app.
    globex_channel = ChannelFactory(
        organization=globex.organization, waba_id=waba_id, app_secret="globex-secret"
    )
    ours = MessageTemplateFactory(channel=acme.channel, name="order_update", language="en_US")
    theirs = MessageTemplateFactory(channel=globex_channel, name="order_update", language="en_US")
    running = CampaignFactory(template=theirs, status=Campaign.Status.RUNNING)
    body = _template_status_body(waba_id)
    event = WebhookEvent.objects.create(
        provider="meta",
        organization=acme.organization,
        body=body,
        kind=WebhookEvent.Kind.TEMPLATE_STATUS,
        dedupe_key="template-status-1",
        signature=meta_signature(body.encode(), "acme-secret"),
    )

    webhook_event_process(event_id=event.id)

    ours.refresh_from_db()
    theirs.refresh_from_db()
    running.refresh_from_db()
    assert ours.status == MessageTemplate.Status.PAUSED
    assert theirs.status == MessageTemplate.Status.APPROVED
    assert running.status == Campaign.Status.RUNNING


def test_a_template_status_on_a_waba_connected_twice_applies_to_each_signers_own_copy(
    tenants,
) -> None:
    """An agency connects one WABA to two organizations through one Meta app: Meta changed
    the template of that account, so each organization's own copy follows."""
    acme, globex = tenants
    waba_id = "102290129340398"
    Channel.objects.filter(id__in=[acme.channel.id, globex.channel.id]).update(
        waba_id=waba_id, app_secret="agency-secret"
    )
    copies = [
        MessageTemplateFactory(channel=channel, name="order_update", language="en_US")
        for channel in (acme.channel, globex.channel)
    ]
    other = ChannelFactory(organization=globex.organization, waba_id="999", app_secret="x")
    elsewhere = MessageTemplateFactory(channel=other, name="order_update", language="en_US")
    body = _template_status_body(waba_id)
    event = WebhookEvent.objects.create(
        provider="meta",
        body=body,
        kind=WebhookEvent.Kind.TEMPLATE_STATUS,
        dedupe_key="template-status-2",
        signature=meta_signature(body.encode(), "agency-secret"),
    )

    webhook_event_process(event_id=event.id)

    for template in (*copies, elsewhere):
        template.refresh_from_db()
    assert [t.status for t in copies] == [MessageTemplate.Status.PAUSED] * 2
    assert elsewhere.status == MessageTemplate.Status.APPROVED
    assert WebhookEvent.objects.get(id=event.id).state == WebhookEvent.State.PROCESSED


def _post_meta(body: str, secret: str) -> int:
    return (
        Client()
        .post(
            "/webhooks/meta/",
            data=body,
            content_type="application/json",
            HTTP_X_HUB_SIGNATURE_256=meta_signature(body.encode(), secret),
        )
        .status_code
    )


def test_a_tenant_naming_anothers_waba_id_cannot_block_its_webhooks(tenants) -> None:
    acme, globex = tenants
    waba_id = "102290129340398"
    Channel.objects.filter(id=acme.channel.id).update(waba_id=waba_id, app_secret="acme-secret")
    ChannelFactory(organization=globex.organization, waba_id=waba_id, app_secret="globex-secret")
    ours = MessageTemplateFactory(channel=acme.channel, name="order_update", language="en_US")
    body = _template_status_body(waba_id)

    assert _post_meta(body, "acme-secret") == 200

    event = WebhookEvent.objects.get(kind=WebhookEvent.Kind.TEMPLATE_STATUS)
    assert event.organization_id == acme.organization.id
    webhook_event_process(event_id=event.id)
    ours.refresh_from_db()
    assert ours.status == MessageTemplate.Status.PAUSED
    # A secret that signs for none of the channels the body names is still refused.
    assert _post_meta(body, "someone-else") == 403


def test_a_shared_waba_never_lets_one_tenants_secret_vouch_for_anothers_number(tenants) -> None:
    acme, globex = tenants
    waba_id = "102290129340398"
    Channel.objects.filter(id=acme.channel.id).update(waba_id=waba_id, app_secret="acme-secret")
    ChannelFactory(organization=globex.organization, waba_id=waba_id, app_secret="globex-secret")
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550001111",
                                    "phone_number_id": acme.channel.phone_number_id,
                                },
                                "statuses": [
                                    {
                                        "id": "wamid.forged",
                                        "status": "read",
                                        "timestamp": "1700000000",
                                        "recipient_id": "15551234567",
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )

    assert _post_meta(body, "globex-secret") == 403
    assert not WebhookEvent.objects.exists()
