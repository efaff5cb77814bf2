"""The campaign admin: list with progress, the change page's figures, the audience upload."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, CampaignAudience
from conversations.models import Message
from tests.campaigns.conftest import add_audience
from tests.factories import CampaignFactory, MessageFactory, MessageTemplateFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


def _upload(client: Client, campaign: Campaign, content: bytes, name: str = "people.csv"):
    return client.post(
        reverse("admin:campaigns_campaign_audience", args=(campaign.id,)),
        {"file": SimpleUploadedFile(name, content, content_type="text/csv")},
        follow=True,
    )


def test_the_list_shows_each_campaigns_progress(admin_client_) -> None:
    campaign = CampaignFactory(status=Campaign.Status.RUNNING)
    entries = add_audience(campaign, 4)
    for entry, status in zip(entries, (Message.Status.SENT, Message.Status.READ), strict=False):
        entry.message = MessageFactory(
            channel=campaign.channel, contact=entry.contact, status=status
        )
        entry.save(update_fields=["message"])

    response = admin_client_.get(reverse("admin:campaigns_campaign_changelist"))

    page = response.content.decode()
    assert response.status_code == 200
    assert '<progress max="4" value="2" title="2 of 4 recipients done"' in page
    assert "</progress> 50%" in page
    assert 'value="launch"' in page


def test_the_change_page_shows_progress_preview_and_the_upload_form(admin_client_) -> None:
    campaign = CampaignFactory()
    add_audience(campaign, 3)

    response = admin_client_.get(reverse("admin:campaigns_campaign_change", args=(campaign.id,)))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="campaign-progress"' in page
    assert "<tr><th>Will receive it</th><td><strong>3</strong></td></tr>" in page
    assert "0 used of 250, 250 left" in page
    assert 'enctype="multipart/form-data"' in page
    assert reverse("admin:campaigns_campaign_audience", args=(campaign.id,)) in page


def test_the_upload_form_imports_and_reports_row_by_row(admin_client_) -> None:
    campaign = CampaignFactory()

    response = _upload(
        admin_client_, campaign, b"phone,1\n+447911123461,A-1\nnot a number,A-2\n+447911123462,\n"
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "Imported 1 of 3 rows." in page
    assert "<tr><td>3</td><td>invalid_number</td>" in page
    assert "<tr><td>4</td><td>missing_variables</td>" in page
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 1


def test_a_bad_upload_is_refused_with_a_message(admin_client_) -> None:
    campaign = CampaignFactory()

    response = _upload(admin_client_, campaign, b"\xff\xd8\xff\xe0JFIF\x00", name="photo.jpg")

    assert response.status_code == 200
    assert "Nothing imported: The file is not UTF-8 text" in response.content.decode()
    assert not CampaignAudience.objects.exists()


def test_a_running_campaign_offers_no_upload_and_refuses_one(admin_client_) -> None:
    campaign = CampaignFactory(status=Campaign.Status.RUNNING)

    page = admin_client_.get(reverse("admin:campaigns_campaign_change", args=(campaign.id,)))
    response = _upload(admin_client_, campaign, b"phone,1\n+447911123461,A-1\n")

    assert page.status_code == 200
    assert "audience of a running campaign can no longer change" in page.content.decode()
    assert "running campaign can no longer be changed" in response.content.decode()
    assert not CampaignAudience.objects.exists()


def test_a_campaign_added_in_the_admin_is_a_draft_on_its_templates_channel(admin_client_) -> None:
    template = MessageTemplateFactory()

    response = admin_client_.post(
        reverse("admin:campaigns_campaign_add"),
        {
            "organization": template.organization_id,
            "name": "Spring sale",
            "template": template.id,
            "scheduled_for_0": "",
            "scheduled_for_1": "",
            "failure_threshold": 50,
        },
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.status, campaign.channel_id) == (Campaign.Status.DRAFT, template.channel_id)
    assert campaign.created_by is not None
    assert campaign.created_by.username == "root"


def test_the_admin_refuses_another_organizations_template(admin_client_) -> None:
    template = MessageTemplateFactory()
    foreign = MessageTemplateFactory()

    response = admin_client_.post(
        reverse("admin:campaigns_campaign_add"),
        {
            "organization": template.organization_id,
            "name": "Spring sale",
            "template": foreign.id,
            "scheduled_for_0": "",
            "scheduled_for_1": "",
            "failure_threshold": 50,
        },
    )

    assert response.status_code == 200
    assert "Choose one of the organization&#x27;s own templates." in response.content.decode()
    assert not Campaign.objects.exists()
