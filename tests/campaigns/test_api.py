"""The campaigns REST API end to end, and that no organization reaches another's campaigns."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from campaigns.models import Campaign, CampaignAudience
from tests.factories import MessageTemplateFactory, OrganizationFactory
from whatsapp_platform.services import api_key_create

pytestmark = pytest.mark.django_db

CSV = "phone,1\n+447911123461,A-1\n+447911123462,A-2\n12345,A-3\n"


@pytest.fixture
def template():
    return MessageTemplateFactory(channel__organization=OrganizationFactory(name="Acme"))


@pytest.fixture
def key(template) -> dict[str, str]:
    _, raw_key = api_key_create(organization=template.organization, name="CRM")
    return {"Authorization": f"Bearer {raw_key}"}


@pytest.fixture
def other_key() -> dict[str, str]:
    _, raw_key = api_key_create(organization=OrganizationFactory(name="Globex"), name="CRM")
    return {"Authorization": f"Bearer {raw_key}"}


def _create(client: Client, key, template, name: str = "Spring sale") -> dict[str, Any]:
    response = client.post(
        "/api/campaigns/",
        {"name": name, "template_id": template.id},
        content_type="application/json",
        headers=key,
    )
    assert response.status_code == 201, response.content
    return response.json()


def _post(client: Client, key, campaign_id: int, action: str, body: dict[str, Any] | None = None):
    return client.post(
        f"/api/campaigns/{campaign_id}/{action}/",
        body or {},
        content_type="application/json",
        headers=key,
    )


def _basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:pw".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_a_campaign_is_created_listed_read_and_renamed(client, key, template) -> None:
    created = _create(client, key, template)

    assert created["status"] == "draft"
    assert created["template_id"] == template.id
    assert created["channel_id"] == template.channel_id
    listed = client.get("/api/campaigns/", headers=key).json()
    assert listed["count"] == 1
    assert listed["results"][0]["id"] == created["id"]
    assert client.get(f"/api/campaigns/{created['id']}/", headers=key).json()["name"] == (
        "Spring sale"
    )
    response = client.patch(
        f"/api/campaigns/{created['id']}/",
        {"name": "Summer sale"},
        content_type="application/json",
        headers=key,
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Summer sale"


def test_bad_input_gets_a_400_with_a_message(client, key, template) -> None:
    foreign = MessageTemplateFactory()

    missing = client.post("/api/campaigns/", {}, content_type="application/json", headers=key)
    wrong = client.post(
        "/api/campaigns/",
        {"name": "X", "template_id": foreign.id},
        content_type="application/json",
        headers=key,
    )

    assert missing.status_code == 400
    assert "template_id" in missing.json()["errors"]
    assert wrong.status_code == 400
    assert f"no template {foreign.id}" in wrong.json()["detail"]
    assert not Campaign.objects.exists()


def test_the_api_needs_a_key(client) -> None:
    assert client.get("/api/campaigns/").status_code == 401


def test_audience_is_imported_from_a_multipart_file_or_a_csv_body(client, key, template) -> None:
    campaign = _create(client, key, template)
    url = f"/api/campaigns/{campaign['id']}/audience/"

    multipart = client.post(
        url,
        {"file": SimpleUploadedFile("people.csv", CSV.encode(), content_type="text/csv")},
        headers=key,
    )
    body = client.post(
        url,
        "\ufeffPhone,1\n+447911123463,A-4\n+447911123461,A-1\n",
        content_type="text/csv; charset=utf-8",
        headers=key,
    )

    assert multipart.status_code == 200
    report = multipart.json()
    assert (report["rows"], report["imported"], report["invalid_numbers"]) == (3, 2, 1)
    assert report["problems"] == [
        {"row": 4, "reason": "invalid_number", "detail": "Not a valid phone number."}
    ]
    assert body.status_code == 200
    assert (body.json()["imported"], body.json()["already_in_audience"]) == (1, 1)
    assert CampaignAudience.objects.filter(campaign_id=campaign["id"]).count() == 3


def test_a_bad_audience_file_gets_a_400_and_imports_nothing(client, key, template) -> None:
    campaign = _create(client, key, template)
    url = f"/api/campaigns/{campaign['id']}/audience/"

    not_csv = client.post(
        url,
        {"file": SimpleUploadedFile("logo.png", b"\x89PNG\r\n\x1a\n\xff\xfe\x00")},
        headers=key,
    )
    no_phone = client.post(url, "name,1\nAna,A\n", content_type="text/csv", headers=key)
    no_file = client.post(url, {"other": "x"}, headers=key)
    as_json = client.post(url, {"phone": "1"}, content_type="application/json", headers=key)

    assert not_csv.status_code == 400
    assert "not UTF-8" in not_csv.json()["detail"]
    assert no_phone.status_code == 400
    assert "no phone column" in no_phone.json()["detail"]
    assert no_file.status_code == 400
    assert "field named file" in no_file.json()["detail"]
    assert as_json.status_code == 415
    assert not CampaignAudience.objects.exists()


def test_a_file_over_the_limit_gets_a_400(client, key, template, settings) -> None:
    settings.CAMPAIGN_AUDIENCE_MAX_BYTES = 100
    campaign = _create(client, key, template)

    response = client.post(
        f"/api/campaigns/{campaign['id']}/audience/",
        "phone,1\n" + "+447911123461,A-1\n" * 20,
        content_type="text/csv",
        headers=key,
    )

    assert response.status_code == 400
    assert "larger than the limit" in response.json()["detail"]


def test_preview_and_stats_answer_the_campaigns_figures(client, key, template) -> None:
    campaign = _create(client, key, template)
    client.post(
        f"/api/campaigns/{campaign['id']}/audience/", CSV, content_type="text/csv", headers=key
    )

    preview = client.get(f"/api/campaigns/{campaign['id']}/preview/", headers=key)
    stats = client.get(f"/api/campaigns/{campaign['id']}/stats/", headers=key)

    assert preview.status_code == 200
    assert preview.json()["recipients"] == 2
    assert preview.json()["eligible"] == 2
    assert preview.json()["new_conversations"] == 2
    assert preview.json()["messaging_tier"] == 250
    assert stats.status_code == 200
    assert (stats.json()["recipients"], stats.json()["pending"], stats.json()["sent"]) == (2, 2, 0)


def test_the_whole_workflow_through_the_api(client, key, template, approver) -> None:
    campaign_id = _create(client, key, template)["id"]
    client.post(
        f"/api/campaigns/{campaign_id}/audience/", CSV, content_type="text/csv", headers=key
    )

    assert _post(client, key, campaign_id, "submit").json()["status"] == "pending_approval"
    refused = _post(client, key, campaign_id, "approve")
    assert refused.status_code == 403
    assert "API keys cannot approve" in refused.json()["detail"]

    approver_session = Client()
    approver_session.force_login(approver)
    approved = approver_session.post(f"/api/campaigns/{campaign_id}/approve/")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "approved"

    when = (timezone.now() + timedelta(hours=2)).isoformat()
    scheduled = _post(client, key, campaign_id, "schedule", {"scheduled_for": when})
    assert scheduled.json()["status"] == "scheduled"
    launched = _post(client, key, campaign_id, "launch")
    assert launched.json()["status"] == "running"
    assert launched.json()["started_at"] is not None
    paused = _post(client, key, campaign_id, "pause", {"reason": "Checking replies"})
    assert (paused.json()["status"], paused.json()["status_reason"]) == (
        "paused",
        "Checking replies",
    )
    assert _post(client, key, campaign_id, "resume").json()["status"] == "running"
    cancelled = _post(client, key, campaign_id, "cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None


def test_refused_steps_get_a_400_with_the_reason(client, key, template) -> None:
    campaign_id = _create(client, key, template)["id"]

    launch = _post(client, key, campaign_id, "launch")
    past = _post(client, key, campaign_id, "schedule", {"scheduled_for": "2020-01-01T00:00:00Z"})
    no_time = _post(client, key, campaign_id, "schedule")

    assert launch.status_code == 400
    assert "only approved campaigns send" in launch.json()["detail"]
    assert past.status_code == 400
    assert "in the future" in past.json()["detail"]
    assert no_time.status_code == 400
    assert "scheduled_for" in no_time.json()["errors"]


def test_rejection_through_basic_auth_needs_the_permission_and_a_reason(
    client, key, template, approver
) -> None:
    User.objects.create_user("staffer", password="pw", is_staff=True)
    User.objects.create_user("customer", password="pw")
    campaign_id = _create(client, key, template)["id"]
    _post(client, key, campaign_id, "submit")
    url = f"/api/campaigns/{campaign_id}/reject/"

    staff_without_permission = client.post(url, {"reason": "No"}, headers=_basic("staffer"))
    not_staff = client.post(url, {"reason": "No"}, headers=_basic("customer"))
    no_reason = client.post(url, {}, headers=_basic("alice"))
    rejected = client.post(url, {"reason": "Wrong audience"}, headers=_basic("alice"))

    assert staff_without_permission.status_code == 403
    assert not_staff.status_code == 403
    assert no_reason.status_code == 400
    assert rejected.status_code == 200
    assert rejected.json()["status_reason"] == "Wrong audience"


def test_the_submitter_cannot_approve_through_the_api(client, key, template, approver) -> None:
    campaign_id = _create(client, key, template)["id"]
    session = Client()
    session.force_login(approver)
    Campaign.objects.filter(id=campaign_id).update(
        status=Campaign.Status.PENDING_APPROVAL, submitted_by=approver
    )

    response = session.post(f"/api/campaigns/{campaign_id}/approve/")

    assert response.status_code == 403
    assert "other than its submitter" in response.json()["detail"]


def test_another_organizations_key_reaches_none_of_its_campaigns(
    client, key, other_key, template
) -> None:
    campaign_id = _create(client, key, template)["id"]
    client.post(
        f"/api/campaigns/{campaign_id}/audience/", CSV, content_type="text/csv", headers=key
    )
    base = f"/api/campaigns/{campaign_id}/"

    assert client.get("/api/campaigns/", headers=other_key).json()["count"] == 0
    for url in (base, base + "preview/", base + "stats/"):
        assert client.get(url, headers=other_key).status_code == 404, url
    patch = client.patch(
        base, {"name": "Mine now"}, content_type="application/json", headers=other_key
    )
    assert patch.status_code == 404
    upload = client.post(base + "audience/", CSV, content_type="text/csv", headers=other_key)
    assert upload.status_code == 404
    for action in ("submit", "schedule", "launch", "pause", "resume", "cancel"):
        response = _post(
            client,
            other_key,
            campaign_id,
            action,
            {"scheduled_for": (timezone.now() + timedelta(hours=1)).isoformat()},
        )
        assert response.status_code == 404, action
    for action in ("approve", "reject"):
        response = _post(client, other_key, campaign_id, action, {"reason": "x"})
        assert response.status_code == 403, action
    stolen = client.post(
        "/api/campaigns/",
        {"name": "X", "template_id": template.id},
        content_type="application/json",
        headers=other_key,
    )
    assert stolen.status_code == 400

    campaign = Campaign.objects.get(id=campaign_id)
    assert (campaign.name, campaign.status) == ("Spring sale", Campaign.Status.DRAFT)
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 2
    assert Campaign.objects.count() == 1


def test_every_campaign_endpoint_is_in_the_api_schema(client, key) -> None:
    response = client.get("/api/schema/", headers=key)

    schema = response.content.decode()
    assert response.status_code == 200
    for path in (
        "/api/campaigns/{campaign_id}/audience/:",
        "/api/campaigns/{campaign_id}/preview/:",
        "/api/campaigns/{campaign_id}/stats/:",
        "/api/campaigns/{campaign_id}/approve/:",
        "/api/campaigns/{campaign_id}/launch/:",
    ):
        assert path in schema
    assert "text/csv" in schema
