from __future__ import annotations

from django.contrib import admin

from archival.models import ArchiveRun
from conversations.admin import ReadOnlyAdmin


@admin.register(ArchiveRun)
class ArchiveRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "job_type",
        "dry_run",
        "state",
        "triggered_by",
        "rows_archived",
        "bytes_written",
    )
    list_filter = ("job_type", "state", "dry_run", "triggered_by")
