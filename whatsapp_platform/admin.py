from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.db.models import QuerySet
from django.http import HttpRequest

from whatsapp_platform.models import ApiKey, Channel, Membership, Organization
from whatsapp_platform.roles import (
    is_platform_operator,
    organization_id_of,
    organization_roles,
    role_grants,
)


class OrganizationScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """People see and act on their own organizations' rows only.

    Pages are filtered through their memberships (no membership: nothing), each row's
    permissions are those of its organization's role (whatsapp_platform/roles.py), and
    foreign-key choices and list filters name only their organizations' rows. Superusers act
    on every organization.
    """

    def _scoped(self, request: HttpRequest) -> bool:
        return not request.user.is_superuser

    def _organization_ids(self, request: HttpRequest) -> list[int]:
        return list(organization_roles(request.user))

    def _writable_organization_ids(self, request: HttpRequest) -> list[int]:
        """The organizations where the role may add or change this page's rows."""
        opts = self.opts
        return [
            organization_id
            for organization_id, role in organization_roles(request.user).items()
            if any(
                role_grants(role, f"{opts.app_label}.{action}_{opts.model_name}")
                for action in ("add", "change")
            )
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if not self._scoped(request):
            return queryset
        if self.model is Organization or issubclass(self.model, Organization):
            return queryset.filter(id__in=self._organization_ids(request))
        path = str(getattr(self.model, "TENANT_ORGANIZATION_PATH", "organization"))
        return queryset.filter(**{f"{path}__in": self._organization_ids(request)})

    def get_list_filter(self, request: HttpRequest) -> Any:
        # A related field's filter would list every organization's rows (their names): offer
        # only the values of the rows this person sees.
        filters = super().get_list_filter(request)
        if not self._scoped(request):
            return filters
        scoped: list[Any] = []
        for item in filters:
            if isinstance(item, str) and get_fields_from_path(self.model, item)[-1].is_relation:
                scoped.append((item, admin.RelatedOnlyFieldListFilter))
            else:
                scoped.append(item)
        return scoped

    def _allowed(self, request: HttpRequest, action: str, obj: Any) -> bool:
        if obj is None or not self._scoped(request):
            return True
        if organization_id_of(obj) not in organization_roles(request.user):
            return False
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}", obj)

    def rows_allowed(self, request: HttpRequest, queryset: QuerySet[Any], action: str) -> list[Any]:
        """The selected rows whose own organization's role allows `action`: admin actions act
        on these only, since a person can hold different roles in different organizations."""
        return [obj for obj in queryset if self._allowed(request, action, obj)]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) and self._allowed(request, "view", obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and self._allowed(request, "change", obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and self._allowed(request, "delete", obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if self._scoped(request):
            # Rows are added or moved only into organizations whose role allows it.
            ids = self._writable_organization_ids(request)
            if related is Organization:
                kwargs["queryset"] = Organization.objects.filter(id__in=ids)
            elif hasattr(related, "tenant"):
                kwargs["queryset"] = related.tenant.for_organizations(ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class PlatformAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Pages of the platform as a whole, not of one organization: superusers only."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_platform_operator(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_operator(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_platform_operator(request.user) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_operator(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_platform_operator(request.user) and super().has_delete_permission(request, obj)


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

    @admin.action(
        description="Clear the credential error (credentials were fixed)", permissions=("change",)
    )
    def clear_credential_error(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        ids = [channel.id for channel in self.rows_allowed(request, queryset, "change")]
        count = Channel.objects.filter(id__in=ids).update(
            credential_error="", credential_error_at=None
        )
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
class MembershipAdmin(PlatformAdmin):  # type: ignore[type-arg]
    """Who holds which role: granting roles is the platform operators' (superusers')."""

    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "organization")
    search_fields = ("user__username", "organization__name")
    autocomplete_fields = ("organization",)
