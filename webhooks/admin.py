from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from conversations.admin import ReadOnlyAdmin
from webhooks.models import WebhookEvent
from webhooks.services import webhook_events_replay
from whatsapp_platform.admin import OrganizationScopedAdmin
from whatsapp_platform.roles import is_platform_operator


@admin.register(WebhookEvent)
class WebhookEventAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    """Members see their organizations' events; unroutable ones (no organization) only
    superusers."""

    list_display = ("id", "received_at", "provider", "organization", "kind", "state", "attempts")
    list_filter = ("provider", "kind", "state", "organization")
    search_fields = ("dedupe_key",)
    list_select_related = ("organization",)
    date_hierarchy = "received_at"
    show_full_result_count = False
    actions = ("replay",)

    # Replaying routes an event anew, to whichever organization's channel it names now, and
    # unroutable events belong to no organization: an operations tool for superusers.
    @admin.action(
        description="Replay (failed, unroutable or stuck events)", permissions=("replay",)
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        count = webhook_events_replay(event_ids=list(queryset.values_list("id", flat=True)))
        skipped = queryset.count() - count
        self.message_user(request, f"Replaying {count} event(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} event(s) were already processed or ignored.", messages.WARNING
            )

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return is_platform_operator(request.user)
