"""Large audience files: stored, answered 202, imported by a real worker, reported on the import."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.audience import (
    AUDIENCE_IMPORT_PREFIX,
    audience_import_files_prune,
    audience_import_queue,
    audience_imports_requeue_stalled,
)
from campaigns.models import AudienceImport, Campaign, CampaignAudience
from campaigns.tasks import import_audience_file
from tests.conftest import Worker, wait_for
from tests.factories import CampaignFactory, OrganizationFactory
from whatsapp_platform.lib.storage import archive_storage
from whatsapp_platform.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

# Twelve good rows, one invalid number and one duplicate: about 300 bytes.
ROWS = [f"+4479111234{n:02d},A-{n}" for n in range(12)]
CSV = "phone,1\n" + "\n".join([*ROWS, "12345,A-X", ROWS[0]]) + "\n"
THRESHOLD = 100


@pytest.fixture(autouse=True)
def small_threshold(settings: Any) -> None:
    """Files over 100 bytes go to the background, so a test file of a few rows does."""
    settings.CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES = THRESHOLD


@pytest.fixture
def campaign() -> Campaign:
    return CampaignFactory(template__channel__organization=OrganizationFactory(name="Acme"))


@pytest.fixture
def key(campaign: Campaign) -> dict[str, str]:
    _, raw_key = api_key_create(organization=campaign.organization, name="CRM")
    return {"Authorization": f"Bearer {raw_key}"}


def _upload(client: Client, key: dict[str, str], campaign_id: int, content: str = CSV) -> Any:
    return client.post(
        f"/api/campaigns/{campaign_id}/audience/",
        {"file": SimpleUploadedFile("people.csv", content.encode(), content_type="text/csv")},
        headers=key,
    )


def _ended(audience_import_id: int) -> AudienceImport | None:
    audience_import = AudienceImport.objects.get(id=audience_import_id)
    return audience_import if audience_import.has_ended else None


def _stored_files() -> list[str]:
    return list(archive_storage().keys(AUDIENCE_IMPORT_PREFIX))


def test_a_file_above_the_threshold_is_answered_202_and_imported_by_the_worker(
    client: Client, key: dict[str, str], campaign: Campaign
) -> None:
    response = _upload(client, key, campaign.id)

    assert response.status_code == 202, response.content
    queued = response.json()
    assert queued["state"] in ("queued", "running", "succeeded")
    assert queued["file_name"] == "people.csv"
    assert queued["file_size"] == len(CSV)
    url = f"/api/campaigns/{campaign.id}/audience/imports/{queued['id']}/"
    assert queued["url"] == f"http://testserver{url}"
    assert response.headers["Location"] == queued["url"]

    def succeeded() -> dict[str, Any] | None:
        body = client.get(url, headers=key).json()
        return body if body["state"] == "succeeded" else None

    done: dict[str, Any] = wait_for(succeeded, timeout=60)  # type: ignore[assignment]
    report = done["report"]
    assert (report["rows"], report["imported"]) == (14, 12)
    assert (report["invalid_numbers"], report["duplicates_in_file"]) == (1, 1)
    assert [p["row"] for p in report["problems"]] == [14, 15]
    assert done["error"] == ""
    assert done["started_at"]
    assert done["finished_at"]
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 12
    listed = client.get(f"/api/campaigns/{campaign.id}/audience/imports/", headers=key).json()
    assert [i["id"] for i in listed["results"]] == [queued["id"]]
    # The stored file is deleted once imported.
    assert _stored_files() == []


def test_a_csv_body_above_the_threshold_is_queued_too(
    client: Client, key: dict[str, str], campaign: Campaign
) -> None:
    response = client.post(
        f"/api/campaigns/{campaign.id}/audience/", CSV, content_type="text/csv", headers=key
    )

    assert response.status_code == 202, response.content
    done = wait_for(lambda: _ended(response.json()["id"]), timeout=60)
    assert isinstance(done, AudienceImport)
    assert done.state == AudienceImport.State.SUCCEEDED
    assert done.report is not None
    assert done.report["imported"] == 12
    assert done.api_key is not None
    assert done.api_key.name == "CRM"


def test_a_file_within_the_threshold_is_still_answered_with_its_report(
    client: Client, key: dict[str, str], campaign: Campaign, settings: Any
) -> None:
    settings.CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES = len(CSV)

    response = _upload(client, key, campaign.id)

    assert response.status_code == 200
    assert (response.json()["rows"], response.json()["imported"]) == (14, 12)
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 12
    assert not AudienceImport.objects.exists()


def test_another_organizations_key_cannot_see_the_import(
    client: Client, key: dict[str, str], campaign: Campaign
) -> None:
    queued = _upload(client, key, campaign.id).json()
    wait_for(lambda: _ended(queued["id"]), timeout=60)
    globex = CampaignFactory(template__channel__organization=OrganizationFactory(name="Globex"))
    _, raw_key = api_key_create(organization=globex.organization, name="CRM")
    other_key = {"Authorization": f"Bearer {raw_key}"}

    detail = client.get(
        f"/api/campaigns/{campaign.id}/audience/imports/{queued['id']}/", headers=other_key
    )
    listed = client.get(f"/api/campaigns/{campaign.id}/audience/imports/", headers=other_key)
    # Its own campaign's id with the other organization's import id: not found either.
    through_own = client.get(
        f"/api/campaigns/{globex.id}/audience/imports/{queued['id']}/", headers=other_key
    )
    own_list = client.get(f"/api/campaigns/{globex.id}/audience/imports/", headers=other_key)

    assert detail.status_code == 404
    assert listed.status_code == 404
    assert through_own.status_code == 404
    assert "people.csv" not in through_own.content.decode()
    assert own_list.json()["count"] == 0


def test_a_campaign_that_can_no_longer_change_refuses_a_large_file_up_front(
    client: Client, key: dict[str, str], campaign: Campaign
) -> None:
    Campaign.objects.filter(id=campaign.id).update(status=Campaign.Status.RUNNING)

    response = _upload(client, key, campaign.id)

    assert response.status_code == 400
    assert "can no longer be changed" in response.json()["detail"]
    assert not AudienceImport.objects.exists()
    assert _stored_files() == []


def test_a_large_file_whose_header_the_import_would_refuse_gets_a_400_up_front(
    client: Client, key: dict[str, str], campaign: Campaign
) -> None:
    no_phone = _upload(client, key, campaign.id, CSV.replace("phone,1", "name,1"))
    no_variable = _upload(client, key, campaign.id, CSV.replace("phone,1", "phone,code"))
    not_utf8 = client.post(
        f"/api/campaigns/{campaign.id}/audience/",
        {"file": SimpleUploadedFile("logo.png", b"\x89PNG\r\n\x1a\n\xff\xfe" * 100)},
        headers=key,
    )

    assert no_phone.status_code == 400
    assert "no phone column" in no_phone.json()["detail"]
    assert no_variable.status_code == 400
    assert "variable {{1}} has no column" in no_variable.json()["detail"]
    assert not_utf8.status_code == 400
    assert "not UTF-8" in not_utf8.json()["detail"]
    assert not AudienceImport.objects.exists()
    assert _stored_files() == []


def test_a_campaign_that_became_non_editable_before_the_task_ran_fails_the_import(
    campaign: Campaign,
) -> None:
    with transaction.atomic():
        # The task is sent once this transaction commits, and the campaign launches before.
        queued = audience_import_queue(
            campaign_id=campaign.id, file=SimpleUploadedFile("people.csv", CSV.encode())
        )
        Campaign.objects.filter(id=campaign.id).update(status=Campaign.Status.RUNNING)

    failed = wait_for(lambda: _ended(queued.id), timeout=60)

    assert isinstance(failed, AudienceImport)
    assert failed.state == AudienceImport.State.FAILED
    assert failed.error == "A running campaign can no longer be changed."
    assert failed.report is None
    assert not CampaignAudience.objects.filter(campaign=campaign).exists()
    assert _stored_files() == []


def test_a_redelivered_task_does_not_import_twice(
    client: Client, key: dict[str, str], campaign: Campaign, celery_worker: Worker
) -> None:
    queued = _upload(client, key, campaign.id).json()
    first = wait_for(lambda: _ended(queued["id"]), timeout=60)
    assert isinstance(first, AudienceImport)
    assert first.state == AudienceImport.State.SUCCEEDED

    # Delivered again through the broker to the worker, and run once more in this process.
    again = import_audience_file.delay(queued["id"])
    wait_for(lambda: f"[{again.id}] succeeded".encode() in celery_worker.log_path.read_bytes())
    import_audience_file(queued["id"])

    after = AudienceImport.objects.get(id=queued["id"])
    assert after.state == AudienceImport.State.SUCCEEDED
    assert after.report == first.report
    assert after.report is not None
    assert after.report["already_in_audience"] == 0
    assert (after.attempts, after.finished_at) == (1, first.finished_at)
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 12


def test_a_run_cut_short_is_imported_cleanly_when_the_task_comes_back(
    campaign: Campaign,
) -> None:
    with transaction.atomic():
        queued = audience_import_queue(
            campaign_id=campaign.id, file=SimpleUploadedFile("people.csv", CSV.encode())
        )
        # As a worker that died part-way leaves it: claimed, its import rolled back. The task
        # that was sent comes back as the redelivery.
        AudienceImport.objects.filter(id=queued.id).update(
            state=AudienceImport.State.RUNNING, attempts=1, started_at=timezone.now()
        )

    done = wait_for(lambda: _ended(queued.id), timeout=60)

    assert isinstance(done, AudienceImport)
    assert done.state == AudienceImport.State.SUCCEEDED
    assert done.attempts == 2
    assert done.report is not None
    assert done.report["imported"] == 12
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 12


def test_an_import_whose_task_was_lost_is_sent_again_by_the_sweeper(
    campaign: Campaign, settings: Any
) -> None:
    # A file whose task never reached the broker: only its row and its stored file exist.
    lost = AudienceImport.objects.create(
        campaign=campaign, file_key=f"{AUDIENCE_IMPORT_PREFIX}lost.csv", file_name="lost.csv"
    )
    archive_storage().put_stream(
        lost.file_key, SimpleUploadedFile("lost.csv", b"phone,1\n+447911123499,B-1\n")
    )
    AudienceImport.objects.filter(id=lost.id).update(updated_at=timezone.now() - timedelta(hours=2))
    settings.CAMPAIGN_AUDIENCE_IMPORT_REQUEUE_AFTER_SECONDS = 3600

    sent = audience_imports_requeue_stalled()
    done = wait_for(lambda: _ended(lost.id), timeout=60)

    assert sent == 1
    assert isinstance(done, AudienceImport)
    assert done.state == AudienceImport.State.SUCCEEDED
    assert CampaignAudience.objects.get(campaign=campaign).variables == {"1": "B-1"}
    assert _stored_files() == []


def test_the_sweep_deletes_stored_files_that_no_import_will_read(campaign: Campaign) -> None:
    storage = archive_storage()
    folder = f"{AUDIENCE_IMPORT_PREFIX}{campaign.organization_id}/{campaign.id}/"
    two_hours_ago = f"{timezone.now() - timedelta(hours=2):%Y%m%dT%H%M%SZ}"
    left_over = f"{folder}{two_hours_ago}-a.csv"  # its campaign was deleted, say
    finished = f"{folder}{two_hours_ago}-b.csv"  # its delete failed
    waiting = f"{folder}{two_hours_ago}-c.csv"  # queued behind long imports
    uploading = f"{folder}{timezone.now():%Y%m%dT%H%M%SZ}-d.csv"  # its import not recorded yet
    for key in (left_over, finished, waiting, uploading):
        storage.put_stream(key, io.BytesIO(b"phone,1\n"))
    AudienceImport.objects.create(
        campaign=campaign, file_key=finished, state=AudienceImport.State.FAILED
    )
    AudienceImport.objects.create(campaign=campaign, file_key=waiting)

    deleted = audience_import_files_prune()

    assert deleted == 2
    assert sorted(_stored_files()) == [waiting, uploading]
    for key in (waiting, uploading):
        storage.purge(key)


def test_the_admin_queues_a_large_upload_and_the_campaign_page_shows_its_report(
    campaign: Campaign,
) -> None:
    client = Client()
    person = User.objects.create_superuser("root", password="pw")
    client.force_login(person)

    response = client.post(
        reverse("admin:campaigns_campaign_audience", args=(campaign.id,)),
        {"file": SimpleUploadedFile("people.csv", CSV.encode(), content_type="text/csv")},
        follow=True,
    )

    assert response.status_code == 200
    assert "The file people.csv is queued for import" in response.content.decode()
    audience_import = AudienceImport.objects.get(campaign=campaign)
    assert audience_import.uploaded_by == person
    wait_for(lambda: _ended(audience_import.id), timeout=60)
    page = client.get(reverse("admin:campaigns_campaign_change", args=(campaign.id,)))
    content = page.content.decode()
    assert 'id="campaign-imports"' in content
    assert "audience-import-succeeded" in content
    assert "invalid numbers 1" in content
    assert re.search(r"<td>14</td>\s*<td>12</td>", content)
