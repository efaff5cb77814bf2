from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone
from tqdm import tqdm

from archival.management.commands._common import (
    add_archive_arguments,
    command_run_create,
    run_summary,
)
from archival.media import media_archive_run
from archival.models import ArchiveRun
from conversations.models import MediaAsset


class Command(BaseCommand):
    help = "Archive old media files to archived-media/ now, with a progress bar."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_archive_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        run, org_id = command_run_create(ArchiveRun.JobType.MEDIA, options)
        days = options["older_than"] or settings.MEDIA_THRESHOLD_DAYS
        due = MediaAsset.objects.filter(created_at__lt=timezone.now() - timedelta(days=days))
        due = due.exclude(state=MediaAsset.State.ARCHIVED)
        if org_id is not None:
            due = due.filter(organization_id=org_id)
        with tqdm(total=due.count(), unit="files", disable=None) as bar:
            media_archive_run(run_id=run.id, progress=bar.update)
        self.stdout.write(run_summary(run))
