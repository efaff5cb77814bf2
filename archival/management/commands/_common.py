"""What the archival commands share: organization lookup and the run summary."""

from __future__ import annotations

from django.core.management.base import CommandError

from archival.models import ArchiveRun
from whatsapp_platform.models import Organization


def organization_id(value: str | None) -> int | None:
    """An organization by id or slug."""
    if not value:
        return None
    organization = (
        Organization.objects.filter(id=int(value)).first()
        if value.isdigit()
        else Organization.objects.filter(slug=value).first()
    )
    if organization is None:
        raise CommandError(f"No organization {value!r}.")
    return organization.id


def run_summary(run: ArchiveRun) -> str:
    run.refresh_from_db()
    return (
        f"Run {run.id} {run.state}: {run.rows_archived} archived, {run.rows_deleted} deleted, "
        f"{run.objects_written} objects, {run.bytes_written} bytes, {run.failures} failures"
    )
