from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from archival.management.commands._common import organization_id, run_summary
from archival.models import ArchiveRun
from archival.services import (
    ArchiveJobBusy,
    archive_messages_preview,
    archive_messages_run,
    archive_run_create,
)


class Command(BaseCommand):
    help = "Archive old messages, webhook events and campaign audiences now, with a progress bar."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report only; change nothing.")
        parser.add_argument("--older-than", type=int, metavar="DAYS")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--organization", help="An organization id or slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        org_id = organization_id(options["organization"])
        try:
            run = archive_run_create(
                job_type=ArchiveRun.JobType.MESSAGES,
                triggered_by=ArchiveRun.Trigger.COMMAND,
                dry_run=options["dry_run"],
                older_than_days=options["older_than"],
                batch_size=options["batch_size"],
                organization_id=org_id,
            )
        except ArchiveJobBusy as busy:
            raise CommandError(str(busy)) from None
        total = sum(
            archive_messages_preview(
                older_than_days=options["older_than"], organization_id=org_id
            ).values()
        )
        with tqdm(total=total, unit="rows", disable=None) as bar:
            archive_messages_run(run_id=run.id, progress=bar.update)
        self.stdout.write(run_summary(run))
        if run.dry_run:
            run.refresh_from_db()
            days = run.report.get("days", {})
            self.stdout.write(json.dumps(days, indent=2, sort_keys=True))
            self.stdout.write(
                f"Would archive {run.report.get('rows', 0)} rows, "
                f"about {run.report.get('bytes_estimate', 0)} bytes compressed."
            )
