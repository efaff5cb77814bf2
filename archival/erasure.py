"""Erasure of one contact: their rows leave the database, the archive objects and storage.

The right to erasure: messages, media (rows and files), conversations, campaign audience rows
and webhook events that name the contact. Archive objects that hold any of them are rewritten
without them (every older version is removed from a versioned bucket too). Storage is cleaned
first, the database last, so that an erasure cut short and run again finishes the job.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from archival.models import ArchiveBatch, ArchivedContact, ArchiveRun
from archival.restore import archive_lines
from archival.services import SPOOL_BYTES, ArchiveVerificationError, _HashingWriter, job_lock
from campaigns.models import CampaignAudience
from conversations.models import Contact, MediaAsset, Message
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.storage import ArchiveStorage, archive_storage
from whatsapp_platform.models import Organization


class ErasureRefused(Exception):
    """The contact's organization is on legal hold: nothing of it may be deleted."""


@dataclass
class ErasureReport:
    contact_id: int
    messages: int = 0
    media_assets: int = 0
    media_objects: int = 0
    conversations: int = 0
    campaign_audience: int = 0
    webhook_events: int = 0
    archived_rows: int = 0
    archive_objects_rewritten: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "contact_id": self.contact_id,
            "messages": self.messages,
            "media_assets": self.media_assets,
            "media_objects": self.media_objects,
            "conversations": self.conversations,
            "campaign_audience": self.campaign_audience,
            "webhook_events": self.webhook_events,
            "archived_rows": self.archived_rows,
            "archive_objects_rewritten": self.archive_objects_rewritten,
        }


class _Matcher:
    """Tells the rows of one contact among archived lines."""

    def __init__(self, contact: Contact) -> None:
        self.contact_id = contact.id
        self.organization_id = contact.organization_id
        patterns = []
        if contact.wa_id:
            patterns.append(rf"(?<!\d){re.escape(contact.wa_id)}(?!\d)")
        if contact.user_id:
            patterns.append(re.escape(contact.user_id))
        self.in_body = re.compile("|".join(patterns)) if patterns else None
        self.message_ids: set[int] = set()

    def event_matches(self, row: dict[str, Any]) -> bool:
        return (
            self.in_body is not None
            and row.get("organization_id") == self.organization_id
            and bool(self.in_body.search(row.get("body") or ""))
        )

    def matches(self, table: str, row: dict[str, Any]) -> bool:
        if table == Message._meta.db_table and row.get("contact_id") == self.contact_id:
            self.message_ids.add(row["id"])
            return True
        if table == CampaignAudience._meta.db_table:
            return row.get("contact_id") == self.contact_id
        if table == MediaAsset._meta.db_table:
            return row.get("message_id") in self.message_ids
        if table == WebhookEvent._meta.db_table:
            return self.event_matches(row)
        return False


def _rewrite(
    storage: ArchiveStorage, batch: ArchiveBatch, matcher: _Matcher, report: ErasureReport
) -> None:
    """Write the batch's object again without the contact's lines; delete their media files."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # type: ignore[assignment]  # noqa: SIM115
    writer = _HashingWriter(spool)
    removed = kept = 0
    with gzip.GzipFile(fileobj=writer, mode="wb", mtime=0) as gz:  # type: ignore[arg-type]
        for line in archive_lines(storage, batch.key):
            if matcher.matches(line["table"], line["row"]):
                removed += 1
                if line["table"] == MediaAsset._meta.db_table and line["row"].get("storage_key"):
                    storage.purge(line["row"]["storage_key"])
                    report.media_objects += 1
                continue
            kept += 1
            gz.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    if not removed:
        spool.close()
        return
    spool.seek(0)
    with spool:
        storage.put_stream(batch.key, spool, content_type="application/gzip")
    stored = storage.stat(batch.key)
    if stored is None or stored.sha256 != writer.digest.hexdigest():
        raise ArchiveVerificationError(f"The rewritten object {batch.key} does not match.")
    storage.purge(batch.key, keep_latest=True)
    ArchiveBatch.objects.filter(id=batch.id).update(
        row_count=kept, size=writer.size, sha256=stored.sha256, updated_at=timezone.now()
    )
    report.archived_rows += removed
    report.archive_objects_rewritten.append(batch.key)


def contact_erase(
    *, contact_id: int, organization: Organization | None = None, triggered_by: str = "command"
) -> ErasureReport:
    """Erase one contact everywhere and report what was removed. Safe to run again."""
    contacts = Contact.objects.select_related("organization")
    if organization is not None:
        contacts = contacts.filter(organization=organization)
    contact = contacts.get(id=contact_id)
    if contact.organization.legal_hold:
        raise ErasureRefused(f"Organization {contact.organization_id} is on legal hold.")
    report = ErasureReport(contact_id=contact.id)
    storage = archive_storage()
    matcher = _Matcher(contact)
    run = ArchiveRun.objects.create(
        job_type=ArchiveRun.JobType.ERASE,
        triggered_by=triggered_by,
        state=ArchiveRun.State.RUNNING,
        started_at=timezone.now(),
        options={"contact_id": contact.id},
    )
    # Archival and restores wait: an object being written cannot miss the erasure.
    with (
        job_lock(ArchiveRun.JobType.MESSAGES, wait=True),
        job_lock(ArchiveRun.JobType.MEDIA, wait=True),
    ):
        batch_ids = ArchivedContact.objects.filter(contact_id=contact.id).values("batch_id")
        for batch in ArchiveBatch.objects.filter(id__in=batch_ids, state=ArchiveBatch.State.STORED):
            _rewrite(storage, batch, matcher, report)
        # Webhook events name people by number, not by contact id: the objects since the
        # contact first wrote are read.
        since = (contact.created_at - timedelta(days=1)).date()
        for batch in ArchiveBatch.objects.filter(
            kind=ArchiveBatch.Kind.WEBHOOK_EVENTS, state=ArchiveBatch.State.STORED, day__gte=since
        ):
            _rewrite(storage, batch, matcher, report)
        ArchivedContact.objects.filter(contact_id=contact.id).delete()

        assets = MediaAsset.objects.filter(message__contact_id=contact.id)
        for key in assets.exclude(storage_key="").values_list("storage_key", flat=True):
            storage.purge(key)
            report.media_objects += 1
        with transaction.atomic():
            report.media_assets = assets.count()
            report.messages = Message.objects.filter(contact_id=contact.id).count()
            report.conversations = contact.conversations.count()
            report.campaign_audience = CampaignAudience.objects.filter(
                contact_id=contact.id
            ).count()
            named = Q(pk__in=[])
            for identifier in (contact.wa_id, contact.user_id):
                if identifier:
                    named |= Q(body__contains=identifier)
            events = [
                event_id
                for event_id, body in WebhookEvent.objects.filter(
                    named, organization_id=contact.organization_id
                ).values_list("id", "body")
                if matcher.in_body is not None and matcher.in_body.search(body)
            ]
            report.webhook_events = WebhookEvent.objects.filter(id__in=events).delete()[0]
            contact.delete()
    ArchiveRun.objects.filter(id=run.id).update(
        state=ArchiveRun.State.SUCCEEDED,
        rows_deleted=report.messages + report.webhook_events + report.archived_rows,
        finished_at=timezone.now(),
        storage_keys=report.archive_objects_rewritten,
        report=report.as_dict(),
    )
    return report
