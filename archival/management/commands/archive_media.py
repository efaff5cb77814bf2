from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from archival.management.commands._common import organization_id, run_summary
from archival.media import media_archive_run
from archival.models import ArchiveRun
from archival.services import ArchiveJobBusy, archive_run_create
from conversations.models import MediaAsset


class Command(BaseCommand):
    help = "Archive old media files to archived-media/ now, with a progress bar."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report only; change nothing.")
        parser.add_argument("--older-than", type=int, metavar="DAYS")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--organization", help="An organization id or slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        org_id = organization_id(options["organization"])
        try:
            run = archive_run_create(
                job_type=ArchiveRun.JobType.MEDIA,
                triggered_by=ArchiveRun.Trigger.COMMAND,
                dry_run=options["dry_run"],
                older_than_days=options["older_than"],
                batch_size=options["batch_size"],
                organization_id=org_id,
            )
        except ArchiveJobBusy as busy:
            raise CommandError(str(busy)) from None
        days = options["older_than"] or settings.MEDIA_THRESHOLD_DAYS
        due = MediaAsset.objects.filter(created_at__lt=timezone.now() - timedelta(days=days))
        due = due.exclude(state=MediaAsset.State.ARCHIVED)
        if org_id is not None:
            due = due.filter(organization_id=org_id)
        with tqdm(total=due.count(), unit="files", disable=None) as bar:
            media_archive_run(run_id=run.id, progress=bar.update)
        self.stdout.write(run_summary(run))
