"""What the archival commands share: their options, the run they start, the run summary."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from archival.models import ArchiveRun
from archival.services import ArchiveJobBusy, archive_run_create
from whatsapp_platform.models import Organization


def add_archive_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="Report only; change nothing.")
    parser.add_argument("--older-than", type=int, metavar="DAYS")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--organization", help="An organization id or slug.")


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


def command_run_create(job_type: str, options: dict[str, Any]) -> tuple[ArchiveRun, int | None]:
    """The run a command starts from its options, and the organization it is limited to."""
    org_id = organization_id(options["organization"])
    try:
        run = archive_run_create(
            job_type=job_type,
            triggered_by=ArchiveRun.Trigger.COMMAND,
            dry_run=options["dry_run"],
            older_than_days=options["older_than"],
            batch_size=options["batch_size"],
            organization_id=org_id,
        )
    except ArchiveJobBusy as busy:
        raise CommandError(str(busy)) from None
    return run, org_id


def run_summary(run: ArchiveRun) -> str:
    run.refresh_from_db()
    return (
        f"Run {run.id} {run.state}: {run.rows_archived} archived, {run.rows_deleted} deleted, "
        f"{run.objects_written} objects, {run.bytes_written} bytes, {run.failures} failures"
    )
