"""Audience import: a CSV file of recipients and their template variables, read row by row.

The file has a phone column (`phone`, `phone_number`, `wa_id`, `msisdn`, `mobile` or `number`)
and one column per template variable, named by its placeholder: `1` (or `{{1}}`) for `{{1}}`,
`first_name` for `{{first_name}}`. Header names are case-insensitive; the file is UTF-8, with or
without a byte-order mark, separated by commas, semicolons or tabs.

Rows are read one at a time and written in batches: contacts are upserted with one insert per
batch, audience rows with another. The whole import is one transaction, so a file found bad
half-way imports nothing. Each problem row is reported with its line number and reason; no row
reaches a person twice (the audience's unique constraint backs the checks).

A file larger than CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES is not imported within the request: it
is stored in the archive storage under `audience-imports/`, recorded as an `AudienceImport`,
and imported by a worker (`audience_import_run`), which deletes the stored file once the import
has ended. The import is the same single transaction, so a run cut short leaves nothing behind
and the next delivery of the task starts again cleanly.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from campaigns.models import AudienceImport, Campaign, CampaignAudience, MessageTemplate
from campaigns.services import campaign_back_to_draft, campaign_require_editable
from conversations.models import Contact
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.phone import InvalidPhoneNumber, normalize_msisdn
from whatsapp_platform.lib.storage import CHUNK, archive_storage

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from whatsapp_platform.models import ApiKey

PHONE_COLUMNS = ("phone", "phone_number", "phone number", "wa_id", "msisdn", "mobile", "number")
DELIMITERS = ",;\t"
BATCH_SIZE = 1000
# The report lists at most this many problem rows; the counts cover them all.
MAX_REPORTED_PROBLEMS = 1000
# Where stored audience files wait for their import, in the archive storage.
AUDIENCE_IMPORT_PREFIX = "audience-imports/"
# Imports the sweeper looks at in one run.
SWEEP_BATCH = 100
# A stored file with no import that has not ended, this old, is left over (its campaign was
# deleted, or a delete failed): the sweep deletes it.
LEFT_OVER_AFTER = timedelta(hours=1)
_KEY_TIME = "%Y%m%dT%H%M%SZ"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class AudienceFileError(ValueError):
    """The file as a whole cannot be imported: nothing was."""


@dataclass(frozen=True)
class RowProblem:
    row: int  # the line in the file, the header being line 1
    reason: str  # invalid_number, duplicate_in_file, already_in_audience, opted_out, ...
    detail: str


@dataclass
class AudienceImportReport:
    rows: int = 0
    imported: int = 0  # audience rows added, the skipped opted-out ones included
    opted_out: int = 0  # imported as skipped
    invalid_numbers: int = 0
    duplicates_in_file: int = 0
    already_in_audience: int = 0
    missing_variables: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    problems_truncated: bool = False
    ignored_columns: list[str] = field(default_factory=list)

    def add_problem(self, row: int, reason: str, detail: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(RowProblem(row, reason, detail))
        else:
            self.problems_truncated = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_placeholders(template: MessageTemplate) -> list[str]:
    """The template's variables in order of appearance: `1`, `2`, or names."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template.body)))


def _header_key(cell: str) -> str:
    return cell.strip().strip("{}").strip().lower()


class _SizeLimitedReader(io.RawIOBase):
    """Reads the upload in blocks and stops the import once it exceeds the size limit."""

    def __init__(self, source: IO[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self._seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        self._seen += len(data)
        if self._seen > self._limit:
            raise AudienceFileError(
                f"The file is larger than the limit of {self._limit // (1024 * 1024)} MB."
            )
        buffer[: len(data)] = data
        return len(data)


def _rows(file: IO[bytes]) -> Iterator[list[str]]:
    limit = settings.CAMPAIGN_AUDIENCE_MAX_BYTES
    text = io.TextIOWrapper(
        io.BufferedReader(_SizeLimitedReader(file, limit)), encoding="utf-8-sig", newline=""
    )
    try:
        first = text.readline()
        if not first.strip():
            raise AudienceFileError("The file is empty: the first line must name the columns.")
        delimiter = max(DELIMITERS, key=first.count)
        yield from csv.reader(itertools.chain([first], text), delimiter=delimiter, strict=True)
    except UnicodeDecodeError:
        raise AudienceFileError(
            "The file is not UTF-8 text: export it as CSV (UTF-8) and upload it again."
        ) from None
    except csv.Error as exc:
        raise AudienceFileError(f"The file is not a readable CSV file: {exc}.") from None
    finally:
        text.detach()


# PostgreSQL takes a batch as arrays in one statement, far faster than an ORM bulk insert;
# other databases (the embedded SQLite default) use the ORM. Existing rows are kept as they are.
_CONTACTS_INSERT = """
    INSERT INTO conversations_contact
        (organization_id, wa_id, username, profile_name, created_at, updated_at)
    SELECT %s, wa_id, '', '', now(), now() FROM unnest(%s::varchar[]) AS wa_id
    ON CONFLICT (organization_id, wa_id) DO NOTHING
"""
_AUDIENCE_INSERT = """
    INSERT INTO campaigns_campaignaudience
        (campaign_id, contact_id, variables, state, skip_reason, created_at, updated_at)
    SELECT campaign_id, contact_id, variables::jsonb, state, skip_reason, now(), now()
    FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::varchar[], %s::varchar[])
        AS t(campaign_id, contact_id, variables, state, skip_reason)
    ON CONFLICT (campaign_id, contact_id) DO NOTHING
"""


def _contacts_insert_missing(organization_id: int, wa_ids: list[str]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_CONTACTS_INSERT, [organization_id, wa_ids])
        return
    Contact.objects.bulk_create(
        [Contact(organization_id=organization_id, wa_id=wa_id) for wa_id in wa_ids],
        ignore_conflicts=True,
    )


def _audience_insert(entries: list[CampaignAudience]) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _AUDIENCE_INSERT,
                [
                    [e.campaign_id for e in entries],
                    [e.contact_id for e in entries],
                    [json.dumps(e.variables) for e in entries],
                    [e.state for e in entries],
                    [e.skip_reason for e in entries],
                ],
            )
        return
    CampaignAudience.objects.bulk_create(entries, ignore_conflicts=True)


class _Batch:
    def __init__(self, campaign: Campaign, report: AudienceImportReport) -> None:
        self.campaign = campaign
        self.report = report
        self.rows: list[tuple[int, str, dict[str, str]]] = []

    def add(self, row: int, wa_id: str, variables: dict[str, str]) -> None:
        self.rows.append((row, wa_id, variables))
        if len(self.rows) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        organization_id = self.campaign.organization_id
        wa_ids = [wa_id for _, wa_id, _ in self.rows]
        _contacts_insert_missing(organization_id, wa_ids)
        contacts = {
            wa_id: (contact_id, opted_out_at is not None)
            for wa_id, contact_id, opted_out_at in Contact.objects.filter(
                organization_id=organization_id, wa_id__in=wa_ids
            ).values_list("wa_id", "id", "opted_out_at")
        }
        present = set(
            CampaignAudience.objects.filter(
                campaign_id=self.campaign.id,
                contact_id__in=[contact_id for contact_id, _ in contacts.values()],
            ).values_list("contact_id", flat=True)
        )
        entries = []
        for row, wa_id, variables in self.rows:
            contact_id, opted_out = contacts[wa_id]
            if contact_id in present:
                self.report.already_in_audience += 1
                self.report.add_problem(row, "already_in_audience", "Already in the audience.")
                continue
            entry = CampaignAudience(
                campaign_id=self.campaign.id, contact_id=contact_id, variables=variables
            )
            if opted_out:
                entry.state = CampaignAudience.State.SKIPPED
                entry.skip_reason = "opted_out"
                self.report.opted_out += 1
                self.report.add_problem(row, "opted_out", "Opted out: imported as skipped.")
            entries.append(entry)
        _audience_insert(entries)
        self.report.imported += len(entries)
        self.rows = []


def _columns(header: list[str], placeholders: list[str]) -> tuple[int, dict[str, int]]:
    """The phone column's index and each template variable's, or AudienceFileError."""
    keys = [_header_key(cell) for cell in header]
    phone_index = next((keys.index(name) for name in PHONE_COLUMNS if name in keys), None)
    if phone_index is None:
        raise AudienceFileError(
            "The file has no phone column: name one column phone (or phone_number, wa_id, "
            "msisdn, mobile, number)."
        )
    variable_index: dict[str, int] = {}
    for placeholder in placeholders:
        if placeholder.lower() not in keys:
            raise AudienceFileError(
                f"The template's variable {{{{{placeholder}}}}} has no column: add a column "
                f"named {placeholder}."
            )
        variable_index[placeholder] = keys.index(placeholder.lower())
    return phone_index, variable_index


@transaction.atomic
def audience_import(
    *, campaign_id: int, file: IO[bytes], default_region: str | None = None
) -> AudienceImportReport:
    """Add the recipients of a CSV file to a campaign's audience.

    Raises AudienceFileError for a file that cannot be imported at all (not UTF-8 CSV, no phone
    column, a template variable without a column, too large), and ValidationError for a campaign
    that can no longer change. Adding recipients to a pending, approved or scheduled campaign
    sends it back to draft.
    """
    campaign = Campaign.objects.select_for_update().select_related("template").get(id=campaign_id)
    campaign_require_editable(campaign)
    rows = _rows(file)
    header = next(rows)
    phone_index, variable_index = _columns(header, template_placeholders(campaign.template))
    used = {phone_index, *variable_index.values()}
    report = AudienceImportReport(
        ignored_columns=[cell for i, cell in enumerate(header) if i not in used and cell.strip()]
    )
    batch = _Batch(campaign, report)
    seen: set[str] = set()
    for line, cells in enumerate(rows, start=2):
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        raw_phone = cells[phone_index] if phone_index < len(cells) else ""
        try:
            wa_id = normalize_msisdn(raw_phone, default_region=default_region)
        except InvalidPhoneNumber as exc:
            report.invalid_numbers += 1
            report.add_problem(line, "invalid_number", str(exc))
            continue
        if wa_id in seen:
            report.duplicates_in_file += 1
            report.add_problem(line, "duplicate_in_file", "The number is on an earlier row.")
            continue
        seen.add(wa_id)
        variables = {
            name: (cells[index].strip() if index < len(cells) else "")
            for name, index in variable_index.items()
        }
        missing = [name for name, value in variables.items() if not value]
        if missing:
            report.missing_variables += 1
            report.add_problem(
                line,
                "missing_variables",
                "Missing " + ", ".join(f"{{{{{name}}}}}" for name in missing) + ".",
            )
            continue
        batch.add(line, wa_id, variables)
    batch.flush()
    if report.imported:
        campaign_back_to_draft(campaign=campaign)
    return report


# --- Large files, imported in the background ---------------------------------------------------


def audience_import_is_inline(*, size: int) -> bool:
    """Whether a file of `size` bytes is imported within the request, answered with its report."""
    limit: int = settings.CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES
    return size <= limit


# The first bytes of a queued file, read to check its header before it is accepted.
HEADER_SAMPLE = 64 * 1024


class _Prefixed(io.RawIOBase):
    """`head`, already read from `rest`, followed by the remainder of `rest`."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _header_check(campaign: Campaign, file: IO[bytes]) -> IO[bytes]:
    """Refuse a file whose first line the import would refuse (not UTF-8 CSV, no phone column,
    a template variable without a column) before it is stored; answers the file to store."""
    head = b""
    complete = False
    while len(head) < HEADER_SAMPLE and b"\n" not in head:
        chunk = file.read(HEADER_SAMPLE - len(head))
        if not chunk:
            complete = True
            break
        head += chunk
    end = head.find(b"\n")
    if end != -1 or complete:
        # A first line longer than the sample is left for the import to judge.
        header = next(_rows(io.BytesIO(head if end == -1 else head[: end + 1])))
        _columns(header, template_placeholders(campaign.template))
    return io.BufferedReader(_Prefixed(head, file))


def audience_import_queue(
    *,
    campaign_id: int,
    file: IO[bytes],
    file_name: str = "",
    uploaded_by: User | None = None,
    api_key: ApiKey | None = None,
) -> AudienceImport:
    """Store an audience file and queue its import by a worker; answers the queued import.

    A campaign that can no longer change is refused at once with ValidationError, and a file
    whose header the import would refuse with AudienceFileError; the worker checks the campaign
    again, as it may move on before the import runs.
    """
    from campaigns.tasks import import_audience_file  # the tasks call this module

    campaign = Campaign.objects.select_related("template").get(id=campaign_id)
    campaign_require_editable(campaign)
    file = _header_check(campaign, file)
    storage = archive_storage()
    # Named with the time of upload, so that the sweep can tell a left-over file from one being
    # uploaded now.
    key = (
        f"{AUDIENCE_IMPORT_PREFIX}{campaign.organization_id}/{campaign.id}/"
        f"{timezone.now():{_KEY_TIME}}-{uuid.uuid4().hex}.csv"
    )
    limit = settings.CAMPAIGN_AUDIENCE_MAX_BYTES
    try:
        stored = storage.put_stream(
            key, io.BufferedReader(_SizeLimitedReader(file, limit)), content_type="text/csv"
        )
        with transaction.atomic():
            record = AudienceImport.objects.create(
                campaign=campaign,
                uploaded_by=uploaded_by,
                api_key=api_key,
                file_name=file_name[:255],
                file_size=stored.size,
                file_key=key,
            )
            enqueue_on_commit(import_audience_file, record.id)
    except BaseException:
        # Nothing was accepted: no file is left behind (and the first error is the one told).
        with contextlib.suppress(Exception):
            storage.purge(key)
        raise
    return record


def audience_import_run(*, audience_import_id: int) -> None:
    """Import a stored audience file: the worker's part. Safe to run again at any point.

    A finished import is left as it is (its file deleted, should a crash have kept it). A run
    claims the import, copies the file to local disk outside any transaction, then imports it in
    one transaction that also records the outcome, under a lock on the import's row: a run cut
    short leaves nothing, and a duplicate delivery waits for the first and then finds it done.
    A file or campaign that cannot be imported fails the import with the reason.
    """
    record = AudienceImport.objects.filter(id=audience_import_id).first()
    if record is None:
        return
    storage = archive_storage()
    if record.has_ended:
        storage.purge(record.file_key)
        return
    if record.attempts >= settings.CAMPAIGN_AUDIENCE_IMPORT_MAX_ATTEMPTS:
        audience_import_fail(
            audience_import_id=audience_import_id,
            error=f"The import did not finish in {record.attempts} attempts: "
            "upload the file again, or split it into smaller files.",
        )
        return
    now = timezone.now()
    claimed = AudienceImport.objects.filter(
        id=audience_import_id,
        state__in=(AudienceImport.State.QUEUED, AudienceImport.State.RUNNING),
    ).update(
        state=AudienceImport.State.RUNNING,
        started_at=now,
        updated_at=now,
        attempts=F("attempts") + 1,
    )
    if claimed != 1:
        return
    if storage.size(record.file_key) is None:
        audience_import_fail(
            audience_import_id=audience_import_id,
            error="The uploaded file is no longer stored: upload it again.",
        )
        return
    with tempfile.TemporaryFile() as local:
        with storage.open(record.file_key) as stored:
            shutil.copyfileobj(stored, local, CHUNK)
        local.seek(0)
        try:
            with transaction.atomic():
                locked = AudienceImport.objects.select_for_update().get(id=audience_import_id)
                if locked.has_ended:
                    return  # another delivery of the task finished it meanwhile
                report = audience_import(campaign_id=locked.campaign_id, file=local)
                finished = timezone.now()
                AudienceImport.objects.filter(id=audience_import_id).update(
                    state=AudienceImport.State.SUCCEEDED,
                    report=report.as_dict(),
                    error="",
                    finished_at=finished,
                    updated_at=finished,
                )
        except (AudienceFileError, ValidationError) as exc:
            reason = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            audience_import_fail(audience_import_id=audience_import_id, error=reason)
            return
    storage.purge(record.file_key)


def audience_import_fail(*, audience_import_id: int, error: str) -> None:
    """An import that has not ended fails with `error`, imports nothing, and its file goes."""
    record = AudienceImport.objects.filter(id=audience_import_id).first()
    if record is None:
        return
    now = timezone.now()
    AudienceImport.objects.filter(
        id=audience_import_id,
        state__in=(AudienceImport.State.QUEUED, AudienceImport.State.RUNNING),
    ).update(state=AudienceImport.State.FAILED, error=error, finished_at=now, updated_at=now)
    archive_storage().purge(record.file_key)


def audience_imports_requeue_stalled() -> int:
    """Send again the imports whose task was lost (the broker was down when it was queued) or
    whose every delivery died; answers how many were sent. The runs count their attempts, so
    an import that keeps dying fails in the end."""
    from campaigns.tasks import import_audience_file

    cutoff = timezone.now() - timedelta(
        seconds=settings.CAMPAIGN_AUDIENCE_IMPORT_REQUEUE_AFTER_SECONDS
    )
    stalled = AudienceImport.objects.filter(
        state__in=(AudienceImport.State.QUEUED, AudienceImport.State.RUNNING),
        updated_at__lt=cutoff,
    ).order_by("updated_at")
    sent = 0
    for audience_import_id, updated_at in stalled.values_list("id", "updated_at")[:SWEEP_BATCH]:
        # Touched first, so that the next sweep leaves it alone for a while.
        touched = AudienceImport.objects.filter(
            id=audience_import_id, updated_at=updated_at
        ).update(updated_at=timezone.now())
        if touched == 1:
            with transaction.atomic():
                enqueue_on_commit(import_audience_file, audience_import_id)
            sent += 1
    return sent


def audience_import_files_prune() -> int:
    """Delete stored audience files that no import will read: answers how many were deleted."""
    cutoff = timezone.now() - LEFT_OVER_AFTER
    storage = archive_storage()
    old_keys = []
    for key in storage.keys(AUDIENCE_IMPORT_PREFIX):
        try:
            uploaded = datetime.strptime(key.rsplit("/", 1)[-1][:16], _KEY_TIME).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a name this module gives
        if uploaded < cutoff:
            old_keys.append(key)
    waiting = set(
        AudienceImport.objects.filter(
            file_key__in=old_keys,
            state__in=(AudienceImport.State.QUEUED, AudienceImport.State.RUNNING),
        ).values_list("file_key", flat=True)
    )
    left_over = [key for key in old_keys if key not in waiting]
    for key in left_over:
        storage.purge(key)
    return len(left_over)


def audience_imports_sweep() -> None:
    """The periodic sweep: lost imports sent again, left-over files deleted."""
    audience_imports_requeue_stalled()
    audience_import_files_prune()
