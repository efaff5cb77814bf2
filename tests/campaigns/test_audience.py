"""Audience import from CSV: good rows in, every bad row reported, bad files refused whole."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns import services
from campaigns.audience import AudienceFileError, audience_import
from campaigns.models import Campaign, CampaignAudience
from conversations.models import Contact
from tests.factories import CampaignFactory, ContactFactory

pytestmark = pytest.mark.django_db


def _import(campaign: Campaign, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return audience_import(campaign_id=campaign.id, file=io.BytesIO(data))


def test_rows_become_recipients_with_their_variables_and_contacts() -> None:
    campaign = CampaignFactory()  # body: "Your order {{1}} has shipped."

    report = _import(
        campaign, "Phone,{{1}},Notes\n+44 7911 123461,A-1001,vip\n447911123462,A-1002,\n"
    )

    assert report.rows == 2
    assert report.imported == 2
    assert report.problems == []
    assert report.ignored_columns == ["Notes"]
    entries = CampaignAudience.objects.filter(campaign=campaign).order_by("id")
    assert [(e.contact.wa_id, e.variables) for e in entries] == [
        ("447911123461", {"1": "A-1001"}),
        ("447911123462", {"1": "A-1002"}),
    ]
    assert {e.state for e in entries} == {CampaignAudience.State.PENDING}
    assert Contact.objects.filter(organization=campaign.organization).count() == 2


def test_a_byte_order_mark_and_semicolons_are_read() -> None:
    campaign = CampaignFactory()

    report = _import(campaign, "\ufeffPHONE;1\r\n+447911123461;A-1\r\n".encode())

    assert report.imported == 1
    assert CampaignAudience.objects.get(campaign=campaign).variables == {"1": "A-1"}


def test_named_placeholders_take_the_column_of_their_name() -> None:
    campaign = CampaignFactory(template__body="Hi {{first_name}}, your code is {{code}}.")

    report = _import(campaign, "wa_id,First_Name,CODE\n447911123461,Ana,X1\n")

    assert report.imported == 1
    entry = CampaignAudience.objects.get(campaign=campaign)
    assert entry.variables == {"first_name": "Ana", "code": "X1"}


def test_an_existing_contact_is_reused_as_it_is() -> None:
    campaign = CampaignFactory()
    contact = ContactFactory(
        organization=campaign.organization, wa_id="447911123461", profile_name="Ana"
    )

    _import(campaign, "phone,1\n+447911123461,A-1\n")

    assert CampaignAudience.objects.get(campaign=campaign).contact_id == contact.id
    contact.refresh_from_db()
    assert contact.profile_name == "Ana"
    assert Contact.objects.filter(organization=campaign.organization).count() == 1


def test_every_bad_row_is_reported_with_its_line_and_reason() -> None:
    campaign = CampaignFactory()
    ContactFactory(
        organization=campaign.organization, wa_id="447911123463", opted_out_at=timezone.now()
    )
    csv_text = (
        "phone,1\n"
        "+447911123461,A-1\n"  # line 2: fine
        "12345,A-2\n"  # line 3: invalid
        "0044 7911 123461,A-3\n"  # line 4: the number of line 2 again
        "+447911123463,A-4\n"  # line 5: opted out
        "+447911123464,\n"  # line 6: no variable
        ",,\n"  # blank: not a row
        "+447911123465\n"  # line 8: short row, no variable
    )

    report = _import(campaign, csv_text)

    assert (report.rows, report.imported) == (6, 2)
    assert report.invalid_numbers == 1
    assert report.duplicates_in_file == 1
    assert report.opted_out == 1
    assert report.missing_variables == 2
    assert [(p.row, p.reason) for p in report.problems] == [
        (3, "invalid_number"),
        (4, "duplicate_in_file"),
        (6, "missing_variables"),
        (8, "missing_variables"),
        (5, "opted_out"),
    ]
    assert "{{1}}" in report.problems[2].detail
    skipped = CampaignAudience.objects.get(campaign=campaign, contact__wa_id="447911123463")
    assert (skipped.state, skipped.skip_reason) == (CampaignAudience.State.SKIPPED, "opted_out")


def test_a_second_import_never_adds_a_recipient_twice() -> None:
    campaign = CampaignFactory()
    _import(campaign, "phone,1\n+447911123461,A-1\n")

    report = _import(campaign, "phone,1\n+447911123461,A-9\n+447911123462,A-2\n")

    assert report.imported == 1
    assert report.already_in_audience == 1
    assert [(p.row, p.reason) for p in report.problems] == [(2, "already_in_audience")]
    assert CampaignAudience.objects.filter(campaign=campaign).count() == 2
    first = CampaignAudience.objects.get(campaign=campaign, contact__wa_id="447911123461")
    assert first.variables == {"1": "A-1"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        (b"name,1\nAna,A-1\n", "no phone column"),
        (b"phone,code\n+447911123461,A-1\n", r"\{\{1\}\} has no column"),
        (b'phone,1\n+447911123461,"A-1\n', "not a readable CSV"),
    ],
)
def test_a_bad_file_is_refused_with_a_reason_and_imports_nothing(content, message) -> None:
    campaign = CampaignFactory()

    with pytest.raises(AudienceFileError, match=message):
        _import(campaign, content)
    assert not CampaignAudience.objects.filter(campaign=campaign).exists()


def test_a_file_found_bad_half_way_imports_nothing() -> None:
    campaign = CampaignFactory()
    good_rows = "".join(f"+4479111{n:05d},A-{n}\n" for n in range(1500))

    with pytest.raises(AudienceFileError, match="not UTF-8"):
        _import(campaign, b"phone,1\n" + good_rows.encode() + b"+447911123461,\xff\xfe\n")
    assert not CampaignAudience.objects.filter(campaign=campaign).exists()
    assert not Contact.objects.filter(organization=campaign.organization).exists()


def test_a_file_over_the_size_limit_is_refused(settings) -> None:
    settings.CAMPAIGN_AUDIENCE_MAX_BYTES = 1024
    campaign = CampaignFactory()
    rows = "".join(f"+4479111{n:05d},A-{n}\n" for n in range(100))

    with pytest.raises(AudienceFileError, match="larger than the limit"):
        _import(campaign, "phone,1\n" + rows)
    assert not CampaignAudience.objects.filter(campaign=campaign).exists()


def test_adding_recipients_to_an_approved_campaign_sends_it_back_to_draft(sender, approver) -> None:
    campaign = CampaignFactory()
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    services.campaign_approve(campaign_id=campaign.id, user=approver)

    _import(campaign, "phone,1\n+447911123461,A-1\n")

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert campaign.approved_by is None


def test_an_import_adding_nobody_leaves_the_approval_alone(sender, approver) -> None:
    campaign = CampaignFactory()
    _import(campaign, "phone,1\n+447911123461,A-1\n")
    services.campaign_submit(campaign_id=campaign.id, user=sender)
    services.campaign_approve(campaign_id=campaign.id, user=approver)

    _import(campaign, "phone,1\n+447911123461,A-1\n")

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.APPROVED


def test_a_running_campaigns_audience_cannot_change() -> None:
    campaign = CampaignFactory(status=Campaign.Status.RUNNING)

    with pytest.raises(ValidationError, match="running campaign can no longer be changed"):
        _import(campaign, "phone,1\n+447911123461,A-1\n")
