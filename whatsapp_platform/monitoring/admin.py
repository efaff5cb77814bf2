from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from whatsapp_platform.admin import OrganizationScopedAdmin, PlatformAdmin
from whatsapp_platform.monitoring.analytics import campaign_funnel
from whatsapp_platform.monitoring.models import AnalyticsEvent, CampaignFunnel, TaskFailure


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = ("name", "organization", "campaign", "occurred_at", "received_at")
    list_filter = ("name",)
    list_select_related = ("organization", "campaign")
    raw_id_fields = ("campaign", "message")
    search_fields = ("event_id",)
    readonly_fields = [f.name for f in AnalyticsEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# Failures of every organization's tasks, named by task and queue only: superusers.
@admin.register(TaskFailure)
class TaskFailureAdmin(PlatformAdmin):  # type: ignore[type-arg]
    list_display = ("task", "kind", "queue", "error", "occurred_at")
    list_filter = ("kind", "queue")
    readonly_fields = ("task", "task_id", "queue", "kind", "error", "occurred_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(CampaignFunnel)
class CampaignFunnelAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    """Each campaign's funnel, sent → delivered → read → replied, then client events."""

    list_display = ("name", "organization", "status", "funnel")
    list_filter = ("status",)
    list_select_related = ("organization",)
    readonly_fields = ("name", "organization", "status", "funnel")
    fields = ("name", "organization", "status", "funnel")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="funnel")
    def funnel(self, campaign: CampaignFunnel) -> str:
        figures = campaign_funnel(campaign=campaign)
        steps = " → ".join(
            f"{step} {figures[step]}"  # type: ignore[literal-required]
            for step in ("sent", "delivered", "read", "replied")
        )
        events = ", ".join(f"{name} {count}" for name, count in figures["events"].items())
        return f"{steps}" + (f" · events: {events}" if events else "")
