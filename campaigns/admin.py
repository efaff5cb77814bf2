from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from campaigns import services, template_sync
from campaigns.audience import (
    AudienceFileError,
    audience_import,
    audience_import_is_inline,
    audience_import_queue,
    template_placeholders,
)
from campaigns.models import Campaign, CampaignAudience, MessageTemplate
from campaigns.selectors import campaign_preview
from campaigns.stats import campaign_stats
from conversations.models import Message
from whatsapp_platform.admin import OrganizationScopedAdmin
from whatsapp_platform.models import Channel

RECIPIENTS_SHOWN = 50
IMPORTS_SHOWN = 10


@admin.register(MessageTemplate)
class MessageTemplateAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
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
        channel_ids = {t.channel_id for t in self.rows_allowed(request, queryset, "change")}
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
        # "All" is every channel for superusers, the person's own organizations' for members.
        channel_ids = (
            list(
                Channel.tenant.for_organizations(
                    self._writable_organization_ids(request)
                ).values_list("id", flat=True)
            )
            if self._scoped(request)
            else None
        )
        count = template_sync.templates_sync_schedule(channel_ids=channel_ids)
        self.message_user(request, f"Template sync queued for {count} channel(s).")
        return redirect("admin:campaigns_messagetemplate_changelist")


def _error_text(exc: ValidationError | PermissionDenied | AudienceFileError) -> str:
    return "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def _run_for_each(
    admin_: OrganizationScopedAdmin,
    request: HttpRequest,
    queryset: QuerySet[Campaign],
    verb: str,
    service: Callable[[Campaign], Any],
    action: str = "change",
) -> None:
    """Each selected campaign, checked against the role in its own organization."""
    done = 0
    for campaign in queryset:
        if not admin_._allowed(request, action, campaign):
            admin_.message_user(
                request, f"{campaign}: your role does not allow this.", messages.ERROR
            )
            continue
        try:
            service(campaign)
        except (ValidationError, PermissionDenied) as exc:
            admin_.message_user(request, f"{campaign}: {_error_text(exc)}", messages.ERROR)
        else:
            done += 1
    if done:
        admin_.message_user(request, f"{verb} {done} campaign(s).", messages.SUCCESS)


class CampaignForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Campaign
        fields = ("organization", "name", "template", "scheduled_for", "failure_threshold")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        template = data.get("template")
        organization = data.get("organization") or getattr(self.instance, "organization", None)
        if (
            template is not None
            and organization is not None
            and template.organization_id != organization.id
        ):
            self.add_error("template", "Choose one of the organization's own templates.")
        return data


class AudienceUploadForm(forms.Form):
    file = forms.FileField(label="CSV file")


@admin.register(Campaign)
class CampaignAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    form = CampaignForm
    list_display = (
        "name",
        "organization",
        "channel",
        "template",
        "status",
        "progress",
        "scheduled_for",
        "submitted_by",
        "approved_by",
    )
    list_filter = ("status", "organization", "channel")
    search_fields = ("name",)
    list_select_related = ("organization", "channel", "template", "submitted_by", "approved_by")
    fields = (
        "organization",
        "name",
        "template",
        "channel",
        "scheduled_for",
        "failure_threshold",
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
    readonly_fields = (
        "channel",
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
    actions = (
        "submit",
        "approve",
        "reject",
        "schedule",
        "launch",
        "pause",
        "resume",
        "cancel",
    )
    change_form_template = "admin/campaigns/campaign/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Campaign]:
        done = Q(audience__state=CampaignAudience.State.SKIPPED) | Q(
            audience__message__status__in=(
                Message.Status.SENT,
                Message.Status.DELIVERED,
                Message.Status.READ,
                Message.Status.FAILED,
            )
        )
        queryset: QuerySet[Campaign] = super().get_queryset(request)
        return queryset.annotate(
            audience_total=Count("audience"), audience_done=Count("audience", filter=done)
        )

    @admin.display(description="Progress")
    def progress(self, campaign: Campaign) -> str:
        total = getattr(campaign, "audience_total", 0)
        done = getattr(campaign, "audience_done", 0)
        return format_html(
            '<progress max="{}" value="{}" title="{} of {} recipients done" style="width: 6em">'
            "</progress> {}%",
            total or 1,
            done,
            done,
            total,
            round(100 * done / total) if total else 0,
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> Any:
        fields = list(self.readonly_fields)
        if obj is not None:
            fields.append("organization")
            if obj.status not in services.EDITABLE_STATUSES:
                fields += ["name", "template", "scheduled_for", "failure_threshold"]
        return fields

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        try:
            if not change:
                campaign = services.campaign_create(
                    organization=obj.organization,
                    template_id=obj.template_id,
                    name=obj.name,
                    scheduled_for=obj.scheduled_for,
                    failure_threshold=obj.failure_threshold,
                    user=request.user,
                )
                obj.pk = campaign.pk
                obj.channel_id = campaign.channel_id
                obj._state.adding = False
                return
            changes = {
                name: form.cleaned_data[name]
                for name in form.changed_data
                if name in services.EDITABLE_FIELDS
            }
            if changes:
                services.campaign_update(campaign_id=obj.id, **changes)
        except ValidationError as exc:
            self.message_user(request, _error_text(exc), messages.ERROR)

    # --- The change page: progress, preview and the audience upload --------------------------

    def get_urls(self) -> list[URLPattern]:
        upload = path(
            "<path:object_id>/audience/",
            self.admin_site.admin_view(self.audience_upload_view),
            name="campaigns_campaign_audience",
        )
        return [upload, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Through the person's own organizations, and None for an id that is not a number.
        campaign = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if campaign is not None:
            context.update(
                stats=campaign_stats(campaign=campaign),
                preview=campaign_preview(campaign=campaign),
                upload_form=AudienceUploadForm(),
                can_upload=campaign.status in services.EDITABLE_STATUSES
                and self.has_change_permission(request, campaign),
                placeholders=template_placeholders(campaign.template),
                # The first recipients: an audience can hold 100,000.
                recipients=campaign.audience.select_related("contact", "message").order_by("id")[
                    :RECIPIENTS_SHOWN
                ],
                recipients_shown=RECIPIENTS_SHOWN,
                inline_max_bytes=settings.CAMPAIGN_AUDIENCE_INLINE_MAX_BYTES,
                imports=campaign.imports.select_related("uploaded_by", "api_key").order_by("-id")[
                    :IMPORTS_SHOWN
                ],
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def audience_upload_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        campaign = self.get_object(request, object_id)
        if campaign is None:
            raise Http404("No such campaign.")
        change_url = reverse("admin:campaigns_campaign_change", args=(campaign.pk,))
        if request.method != "POST" or not self.has_change_permission(request, campaign):
            return HttpResponseRedirect(change_url)
        form = AudienceUploadForm(request.POST, request.FILES)
        if not form.is_valid():
            self.message_user(request, "Choose a CSV file to import.", messages.ERROR)
            return HttpResponseRedirect(change_url)
        upload = form.cleaned_data["file"]
        limit = settings.CAMPAIGN_AUDIENCE_MAX_BYTES
        if upload.size is not None and upload.size > limit:
            self.message_user(
                request,
                f"The file is larger than the limit of {limit // (1024 * 1024)} MB.",
                messages.ERROR,
            )
            return HttpResponseRedirect(change_url)
        if upload.size is not None and not audience_import_is_inline(size=upload.size):
            try:
                audience_import_queue(
                    campaign_id=campaign.pk,
                    file=upload,
                    file_name=upload.name or "",
                    uploaded_by=request.user,  # type: ignore[arg-type]
                )
            except (AudienceFileError, ValidationError) as exc:
                self.message_user(request, f"Nothing imported: {_error_text(exc)}", messages.ERROR)
                return HttpResponseRedirect(change_url)
            self.message_user(
                request,
                f"The file {upload.name} is queued for import: its state and report show under "
                "Recent imports below.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(change_url)
        try:
            report = audience_import(campaign_id=campaign.pk, file=upload)
        except (AudienceFileError, ValidationError) as exc:
            self.message_user(request, f"Nothing imported: {_error_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(change_url)
        self.message_user(
            request,
            f"Imported {report.imported} of {report.rows} rows.",
            messages.SUCCESS if report.imported else messages.WARNING,
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": campaign,
            "title": f"Audience import: {campaign}",
            "report": report,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/audience_report.html", context)

    # --- Workflow actions -----------------------------------------------------------------------

    @admin.action(description="Submit for approval", permissions=("change",))
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
            action="approve",
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
            action="approve",
        )

    @admin.action(description="Schedule at its scheduled time", permissions=("change",))
    def schedule(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        def schedule_one(campaign: Campaign) -> Campaign:
            if campaign.scheduled_for is None:
                raise ValidationError("Set its scheduled time first.")
            return services.campaign_schedule(campaign_id=campaign.id, when=campaign.scheduled_for)

        _run_for_each(self, request, queryset, "Scheduled", schedule_one)

    @admin.action(description="Launch now", permissions=("change",))
    def launch(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Launched",
            lambda c: services.campaign_launch(campaign_id=c.id),
        )

    @admin.action(description="Pause", permissions=("change",))
    def pause(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Paused",
            lambda c: services.campaign_pause(campaign_id=c.id, reason="Paused in the admin."),
        )

    @admin.action(description="Resume", permissions=("change",))
    def resume(self, request: HttpRequest, queryset: QuerySet[Campaign]) -> None:
        _run_for_each(
            self,
            request,
            queryset,
            "Resumed",
            lambda c: services.campaign_resume(campaign_id=c.id),
        )

    @admin.action(description="Cancel", permissions=("change",))
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
