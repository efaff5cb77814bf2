from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from archival.models import ArchiveBatch, ArchiveRun
from archival.services import ArchiveJobBusy, archive_run_trigger
from conversations.admin import ReadOnlyAdmin
from whatsapp_platform.admin import PlatformAdmin


class ArchiveBatchInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ArchiveBatch
    fields = ("key", "state", "row_count", "size", "sha256", "first_id", "last_id")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = False


# Archival runs and batches span every organization (one run archives them all): superusers.
@admin.register(ArchiveRun)
class ArchiveRunAdmin(PlatformAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "job_type",
        "dry_run",
        "state",
        "triggered_by",
        "rows_archived",
        "bytes_written",
        "failures",
    )
    list_filter = ("job_type", "state", "dry_run", "triggered_by")
    inlines = (ArchiveBatchInline,)
    actions = ("run_again",)

    @admin.action(description="Run the same job again now")
    def run_again(self, request: HttpRequest, queryset: QuerySet[ArchiveRun]) -> None:
        for job_type in set(
            queryset.filter(job_type__in=("messages", "media")).values_list("job_type", flat=True)
        ):
            try:
                run = archive_run_trigger(job_type=job_type, triggered_by=ArchiveRun.Trigger.ADMIN)
            except ArchiveJobBusy as busy:
                self.message_user(request, str(busy), messages.WARNING)
                continue
            self.message_user(request, f"{job_type} run {run.id} started.")


@admin.register(ArchiveBatch)
class ArchiveBatchAdmin(PlatformAdmin, ReadOnlyAdmin):
    list_display = ("key", "kind", "day", "state", "row_count", "size", "run")
    list_filter = ("kind", "state")
    search_fields = ("key",)
    date_hierarchy = "day"
