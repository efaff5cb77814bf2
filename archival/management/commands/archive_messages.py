from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from archival.management.commands._common import (
    add_archive_arguments,
    command_run_create,
    run_summary,
)
from archival.models import ArchiveRun
from archival.services import (
    archive_messages_preview,
    archive_messages_run,
)


class Command(BaseCommand):
    help = "Archive old messages, webhook events and campaign audiences now, with a progress bar."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_archive_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run, org_id = command_run_create(ArchiveRun.JobType.MESSAGES, options)
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
