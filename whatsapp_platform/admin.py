from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from whatsapp_platform.models import ApiKey, Channel, Membership, Organization
from whatsapp_platform.roles import organization_id_of, organization_roles


class OrganizationScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Members of organizations see and act on their own organizations' rows only.

    Pages are filtered through their memberships, each row's permissions are those of its
    organization's role (whatsapp_platform/roles.py), and foreign-key choices are limited to
    their organizations' rows. Superusers, and platform staff given Django permissions
    directly with no membership, act on every organization.
    """

    def _organization_ids(self, request: HttpRequest) -> list[int]:
        return list(organization_roles(request.user))

    def _is_member_only(self, request: HttpRequest) -> bool:
        return not request.user.is_superuser and bool(organization_roles(request.user))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if not self._is_member_only(request):
            return queryset
        if self.model is Organization or issubclass(self.model, Organization):
            return queryset.filter(id__in=self._organization_ids(request))
        path = str(getattr(self.model, "TENANT_ORGANIZATION_PATH", "organization"))
        return queryset.filter(**{f"{path}__in": self._organization_ids(request)})

    def _allowed(self, request: HttpRequest, action: str, obj: Any) -> bool:
        if obj is None or not self._is_member_only(request):
            return True
        if organization_id_of(obj) not in organization_roles(request.user):
            return False
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}", obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) and self._allowed(request, "view", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._allowed(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._allowed(request, "delete", obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if self._is_member_only(request):
            ids = self._organization_ids(request)
            if related is Organization:
                kwargs["queryset"] = Organization.objects.filter(id__in=ids)
            elif hasattr(related, "tenant"):
                kwargs["queryset"] = related.tenant.for_organizations(ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ChannelInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Channel
    fields = ("name", "provider", "phone_number_id", "sender", "is_active")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = ("name", "slug", "is_active", "legal_hold", "created_at")
    list_filter = ("is_active", "legal_hold")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (ChannelInline,)


class ChannelForm(forms.ModelForm):  # type: ignore[type-arg]
    """Secrets are write-only: never shown, and left as they are when the field is blank."""

    class Meta:
        model = Channel
        fields = (
            "organization",
            "name",
            "provider",
            "is_active",
            "messages_per_second",
            "waba_id",
            "phone_number_id",
            "display_phone_number",
            *Channel.SECRET_FIELDS,
            "account_sid",
            "sender",
            "messaging_service_sid",
        )
        widgets = {
            name: forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
            for name in Channel.SECRET_FIELDS
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in Channel.SECRET_FIELDS:
            if name not in self.fields:
                continue
            is_set = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[name].help_text = (
                "Set. Leave blank to keep it, or type a new one to replace it."
                if is_set
                else "Not set."
            )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if self.instance.pk:
            stored = Channel.objects.get(pk=self.instance.pk)
            for name in Channel.SECRET_FIELDS:
                if not cleaned.get(name):
                    cleaned[name] = getattr(stored, name)
                    setattr(self.instance, name, cleaned[name])
        return cleaned


@admin.register(Channel)
class ChannelAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    form = ChannelForm
    list_display = (
        "__str__",
        "organization",
        "provider",
        "address",
        "messages_per_second",
        "is_active",
        "has_credential_error",
    )
    list_filter = ("provider", "is_active", "organization")
    search_fields = ("name", "phone_number_id", "display_phone_number", "sender", "waba_id")
    list_select_related = ("organization",)
    readonly_fields = ("credential_error", "credential_error_at", "created_at", "updated_at")
    actions = ("clear_credential_error",)
    fieldsets = (
        (
            None,
            {"fields": ("organization", "name", "provider", "is_active", "messages_per_second")},
        ),
        (
            "Meta Cloud API",
            {
                "fields": (
                    "waba_id",
                    "phone_number_id",
                    "display_phone_number",
                    "access_token",
                    "app_secret",
                    "webhook_verify_token",
                )
            },
        ),
        ("Twilio", {"fields": ("account_sid", "auth_token", "sender", "messaging_service_sid")}),
        (
            "Status",
            {"fields": ("credential_error", "credential_error_at", "created_at", "updated_at")},
        ),
    )

    @admin.display(boolean=True, description="Credential error")
    def has_credential_error(self, channel: Channel) -> bool:
        return bool(channel.credential_error)

    @admin.action(description="Clear the credential error (credentials were fixed)")
    def clear_credential_error(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        count = queryset.update(credential_error="", credential_error_at=None)
        self.message_user(request, f"Cleared {count} channel(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdmin):  # type: ignore[type-arg]
    list_display = (
        "name",
        "organization",
        "key_prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("organization",)
    search_fields = ("name", "key_prefix")
    fields = ("organization", "name", "key_prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("key_prefix", "created_at", "last_used_at")

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            raw_key = obj.set_new_key()
            messages.warning(
                request,
                f"The new API key is {raw_key} . Copy it now: it is stored hashed and will not "
                "be shown again.",
            )
        super().save_model(request, obj, form, change)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "organization")
    search_fields = ("user__username", "organization__name")
    autocomplete_fields = ("organization",)
