from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path

from campaigns import services, template_sync
from campaigns.models import Campaign, CampaignAudience, MessageTemplate


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "name",
        "language",
        "category",
        "status",
        "organization",
        "channel",
        "synced_at",
    )
    list_filter = ("status", "category", "language", "organization")
    search_fields = ("name", "body")
    list_select_related = ("organization", "channel")
    actions = ("sync_channels",)
    # Adds the "Sync all templates" button above the list.
    change_list_template = "admin/campaigns/messagetemplate/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        sync_all = self.admin_site.admin_view(self.sync_all_view)
        return [
            path("sync/", sync_all, name="campaigns_messagetemplate_sync"),
            *super().get_urls(),
        ]

    @admin.action(
        description="Sync the templates of the selected templates' channels",
        permissions=("change",),
    )
    def sync_channels(self, request: HttpRequest, queryset: QuerySet[MessageTemplate]) -> None:
        channel_ids = set(queryset.values_list("channel_id", flat=True))
        count = template_sync.templates_sync_schedule(channel_ids=channel_ids)
        self.message_user(request, f"Template sync queued for {count} channel(s).")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_sync": self.has_change_permission(request)}
        return super().changelist_view(request, extra_context)

    def sync_all_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        count = template_sync.templates_sync_schedule()
        self.message_user(request, f"Template sync queued for {count} channel(s).")
        return redirect("admin:campaigns_messagetemplate_changelist")


class CampaignAudienceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = CampaignAudience
    fields = ("contact", "state", "skip_reason", "message")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False


def _run_for_each(
    admin_: admin.ModelAdmin,  # type: ignore[type-arg]
    request: HttpRequest,
    queryset: QuerySet[Campaign],
    verb: str,
    service: Callable[[Campaign], Any],
) -> None:
    done = 0
    for campaign in queryset:
        try:
            service(campaign)
        except (ValidationError, PermissionDenied) as exc:
            text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            admin_.message_user(request, f"{campaign}: {text}", messages.ERROR)
        else:
            done += 1
    if done:
        admin_.message_user(request, f"{verb} {done} campaign(s).", messages.SUCCESS)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "name",
        "organization",
        "channel",
        "template",
        "status",
        "scheduled_for",
        "submitted_by",
        "approved_by",
    )
    list_filter = ("status", "organization", "channel")
    search_fields = ("name",)
    list_select_related = ("organization", "channel", "template", "submitted_by", "approved_by")
    readonly_fields = (
        "status",
        "status_reason",
        "created_by",
        "submitted_by",
        "submitted_at",
        "approved_by",
        "approved_at",
        "started_at",
        "finished_at",
    )
    inlines = (CampaignAudienceInline,)
    actions = ("submit", "approve", "reject", "pause", "resume", "cancel")

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description="Submit for approval")
    def submit(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Submitted",
            lambda c: services.campaign_submit(campaign_id=c.id, user=request.user),
        )

    @admin.action(description="Approve", permissions=("approve",))
    def approve(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Approved",
            lambda c: services.campaign_approve(campaign_id=c.id, user=request.user),
        )

    @admin.action(description="Reject", permissions=("approve",))
    def reject(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Rejected",
            lambda c: services.campaign_reject(
                campaign_id=c.id, user=request.user, reason="Rejected in the admin."
            ),
        )

    @admin.action(description="Pause")
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Paused",
            lambda c: services.campaign_pause(campaign_id=c.id, reason="Paused in the admin."),
        )

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Resumed",
            lambda c: services.campaign_resume(campaign_id=c.id),
        )

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Cancelled",
            lambda c: services.campaign_cancel(campaign_id=c.id, reason="Cancelled in the admin."),
        )

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(services.APPROVE_PERMISSION)
