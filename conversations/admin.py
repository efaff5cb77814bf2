from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from conversations.models import Contact, Conversation, MediaAsset, Message


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The record of what happened: looked at in the admin, changed only by the platform."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
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


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "__str__",
        "organization",
        "channel",
        "status",
        "needs_human",
        "last_message_at",
    )
    list_filter = ("status", "needs_human", "organization", "channel")
    search_fields = ("contact__wa_id", "contact__profile_name")
    list_select_related = ("organization", "channel", "contact")
    raw_id_fields = ("contact",)
    readonly_fields = ("lease_expires_at", "reply_due_at", "ai_conversation_id", "created_at")


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
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
    search_fields = ("provider_message_id", "contact__wa_id")
    list_select_related = ("organization", "channel")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(MediaAsset)
class MediaAssetAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "organization", "mime_type", "size", "state")
    list_filter = ("state", "organization")
    search_fields = ("provider_media_id", "storage_key", "sha256")
    list_select_related = ("organization",)
