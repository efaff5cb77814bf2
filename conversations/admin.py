from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from conversations.assistant import (
    ai_unavailable_reason,
    conversation_agent_reply,
    conversation_handover,
    conversation_resume,
    organization_tokens,
)
from conversations.models import (
    AiReply,
    Assistant,
    Contact,
    Conversation,
    MediaAsset,
    Message,
    OrganizationAiUsage,
)
from whatsapp_platform.admin import OrganizationScopedAdmin


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The record of what happened: looked at in the admin, changed only by the platform."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Contact)
class ContactAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = (
        "__str__",
        "organization",
        "wa_id",
        "user_id",
        "opted_out_at",
        "last_inbound_at",
    )
    list_filter = ("organization", ("opted_out_at", admin.EmptyFieldListFilter))
    search_fields = ("wa_id", "user_id", "username", "profile_name")
    list_select_related = ("organization",)
    readonly_fields = ("last_inbound_at", "created_at", "updated_at")


class ConversationForm(forms.ModelForm):  # type: ignore[type-arg]
    """The conversation's flags, and a reply box for a human agent."""

    reply_text = forms.CharField(
        label="Reply",
        required=False,
        max_length=4096,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Free-form text: only within 24 hours of the customer's last message.",
    )
    reply_template = forms.CharField(
        required=False, help_text="Outside the 24-hour window: an approved template's name."
    )
    reply_language = forms.CharField(required=False, initial="en_US")
    reply_parameters = forms.CharField(
        required=False, help_text="The template's body parameters, separated by |."
    )

    class Meta:
        model = Conversation
        fields = ("needs_human",)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("reply_text") and data.get("reply_template"):
            raise forms.ValidationError("Send either a reply or a template, not both.")
        return data

    def agent_template(self) -> dict[str, Any] | None:
        name = (self.cleaned_data.get("reply_template") or "").strip()
        if not name:
            return None
        parameters = self.cleaned_data.get("reply_parameters") or ""
        return {
            "name": name,
            "language": (self.cleaned_data.get("reply_language") or "").strip() or "en_US",
            "body_parameters": [p.strip() for p in parameters.split("|") if p.strip()],
        }


@admin.register(Conversation)
class ConversationAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    form = ConversationForm
    list_display = (
        "__str__",
        "organization",
        "channel",
        "status",
        "needs_human",
        "last_message_at",
        "tokens",
    )
    list_filter = ("status", "needs_human", "organization", "channel")
    search_fields = ("contact__wa_id", "contact__profile_name")
    list_select_related = ("organization", "channel", "contact")
    actions = ("hand_over", "resume_ai")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "organization",
                    "channel",
                    "contact",
                    "status",
                    "needs_human",
                    "handed_over_at",
                    "token_totals",
                )
            },
        ),
        ("Transcript", {"fields": ("transcript",)}),
        (
            "Reply as an agent",
            {
                "fields": (
                    "reply_text",
                    "reply_template",
                    "reply_language",
                    "reply_parameters",
                )
            },
        ),
        (
            "AI state",
            {
                "classes": ("collapse",),
                "fields": (
                    "reply_due_at",
                    "lease_expires_at",
                    "ai_conversation_id",
                    "answered_until_id",
                    "created_at",
                ),
            },
        ),
    )
    readonly_fields = (
        "organization",
        "channel",
        "contact",
        "status",
        "handed_over_at",
        "token_totals",
        "transcript",
        "reply_due_at",
        "lease_expires_at",
        "ai_conversation_id",
        "answered_until_id",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return cast(
            "QuerySet[Conversation]",
            super()
            .get_queryset(request)
            .annotate(
                input_tokens=Sum("ai_replies__input_tokens"),
                output_tokens=Sum("ai_replies__output_tokens"),
            ),
        )

    @admin.display(description="AI tokens")
    def tokens(self, obj: Any) -> int:
        return int(getattr(obj, "input_tokens", 0) or 0) + int(
            getattr(obj, "output_tokens", 0) or 0
        )

    @admin.display(description="AI tokens (input / output)")
    def token_totals(self, obj: Any) -> str:
        totals = AiReply.objects.filter(conversation=obj).aggregate(
            i=Sum("input_tokens"), o=Sum("output_tokens")
        )
        return f"{totals['i'] or 0} / {totals['o'] or 0}"

    @admin.display(description="Transcript")
    def transcript(self, obj: Conversation) -> str:
        rows = obj.messages.order_by("-id").values_list(
            "created_at", "direction", "type", "text", "status"
        )[:200]
        lines = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    f"{at:%Y-%m-%d %H:%M:%S}",
                    "Customer" if direction == Message.Direction.INBOUND else "Business",
                    kind,
                    text,
                    status,
                )
                for at, direction, kind, text, status in reversed(list(rows))
            ),
        )
        return format_html("<table>{}</table>", lines) if lines else "No messages."

    def save_model(self, request: HttpRequest, obj: Conversation, form: Any, change: bool) -> None:
        Conversation.objects.filter(id=obj.id).update(needs_human=obj.needs_human)
        text = form.cleaned_data.get("reply_text") or ""
        template = form.agent_template()
        if not text and not template:
            return
        try:
            conversation_agent_reply(conversation=obj, text=text, template=template)
        except ValueError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, "The reply is on its way.", messages.SUCCESS)

    @admin.action(description="Hand over to a human (pause AI replies)", permissions=("change",))
    def hand_over(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        allowed = self.rows_allowed(request, queryset, "change")
        count = sum(conversation_handover(conversation_id=c.id, reason="admin") for c in allowed)
        self.message_user(request, f"{count} conversation(s) handed over.", messages.SUCCESS)

    @admin.action(description="Resume AI replies", permissions=("change",))
    def resume_ai(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        allowed = self.rows_allowed(request, queryset, "change")
        count = sum(conversation_resume(conversation_id=c.id) for c in allowed)
        self.message_user(request, f"AI replies resumed in {count} conversation(s).")


@admin.register(Assistant)
class AssistantAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = ("channel", "enabled", "model", "debounce_seconds", "ai_status")
    list_filter = ("enabled",)
    list_select_related = ("channel",)
    readonly_fields = ("ai_status",)
    fields = (
        "ai_status",
        "channel",
        "enabled",
        "model",
        "instructions",
        "debounce_seconds",
        "history_size",
        "fallback_text",
        "handover_keywords",
    )

    @admin.display(description="Status")
    def ai_status(self, obj: Assistant | None) -> str:
        reason = ai_unavailable_reason()
        if reason:
            return reason
        if obj is None or obj.pk is None:
            return "AI replies run once the assistant is saved and on."
        if not obj.enabled:
            return "AI replies are off for this channel."
        if _budget_spent(obj.channel.organization_id):
            return "The organization's monthly token budget is spent: AI replies are paused."
        return "AI replies are on."

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        reason = ai_unavailable_reason()
        if reason:
            self.message_user(request, reason, messages.WARNING)
        return super().render_change_form(request, context, *args, **kwargs)


def _budget_spent(organization_id: int) -> bool:
    budget = settings.AI_MONTHLY_TOKEN_BUDGET
    return (
        bool(budget)
        and organization_tokens(organization_id=organization_id, this_month=True) >= budget
    )


@admin.register(OrganizationAiUsage)
class OrganizationAiUsageAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = ("name", "tokens_this_month", "tokens_total", "budget")
    search_fields = ("name",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Tokens this month")
    def tokens_this_month(self, obj: OrganizationAiUsage) -> int:
        return organization_tokens(organization_id=obj.id, this_month=True)

    @admin.display(description="Tokens in all")
    def tokens_total(self, obj: OrganizationAiUsage) -> int:
        return organization_tokens(organization_id=obj.id)

    @admin.display(description="Monthly budget")
    def budget(self, obj: OrganizationAiUsage) -> str:
        budget = settings.AI_MONTHLY_TOKEN_BUDGET
        if not budget:
            return "No limit"
        if _budget_spent(obj.id):
            return f"Spent ({budget}): AI replies are paused"
        return str(budget)


@admin.register(AiReply)
class AiReplyAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "organization",
        "conversation",
        "outcome",
        "model",
        "input_tokens",
        "output_tokens",
        "latency_ms",
    )
    list_filter = ("outcome", "model", "organization")
    list_select_related = ("organization", "conversation")


@admin.register(Message)
class MessageAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "organization",
        "channel",
        "direction",
        "type",
        "status",
        "error_code",
    )
    list_filter = ("direction", "status", "type", "provider", "organization", "channel")
    search_fields = ("provider_message_id", "earlier_provider_message_id", "contact__wa_id")
    list_select_related = ("organization", "channel")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(MediaAsset)
class MediaAssetAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = ("id", "created_at", "organization", "mime_type", "size", "state")
    list_filter = ("state", "organization")
    search_fields = ("provider_media_id", "storage_key", "sha256")
    list_select_related = ("organization",)
