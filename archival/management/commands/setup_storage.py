from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from archival.storage import archive_storage_setup


class Command(BaseCommand):
    help = (
        "Create the archive bucket if needed, block public access, turn on default encryption "
        "and versioning, and set the lifecycle. Safe to run again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(archive_storage_setup()))
