from __future__ import annotations

from django.contrib import admin

from conversations.admin import ReadOnlyAdmin
from webhooks.models import WebhookEvent


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "received_at", "provider", "organization", "kind", "state", "attempts")
    list_filter = ("provider", "kind", "state", "organization")
    search_fields = ("dedupe_key",)
    list_select_related = ("organization",)
    date_hierarchy = "received_at"
    show_full_result_count = False
