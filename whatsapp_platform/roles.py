"""What each role of a membership allows, as Django permissions granted per organization.

Memberships are the only source of permissions. `MembershipBackend` answers
`user.has_perm(...)`: without an object, whether any of the person's organizations grants it
(so the admin shows the page); with an object, whether the object's own organization does.
`PasswordBackend` signs people in and grants nothing: Django permissions and groups given
directly are ignored, so no one reaches an organization's rows without a membership in it.
Superusers, the platform's operators, have every permission (Django's `User.has_perm`) and are
the only ones to see platform-wide pages.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.contrib.auth.models import Permission
from django.db import models

from whatsapp_platform.models import Membership, Organization

Role = Membership.Role

APPROVE_CAMPAIGN = "campaigns.approve_campaign"
# The apps whose rows belong to organizations.
TENANT_APPS = frozenset(
    {"whatsapp_platform", "conversations", "campaigns", "webhooks", "monitoring"}
)
# What a sender may create and change, besides viewing everything.
SENDER_MODELS = frozenset({"message", "conversation", "contact", "campaign"})
# Rows that are not an organization's: only superusers manage them.
PLATFORM_MODELS = frozenset({"heartbeat", "taskfailure", "queuesample", "membership"})


def organization_roles(user: Any) -> dict[int, str]:
    """Organization id → role, cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "pk", None):
        return {}
    cached: dict[int, str] | None = getattr(user, "_organization_roles", None)
    if cached is None:
        cached = dict(
            Membership.objects.filter(user_id=user.pk).values_list("organization_id", "role")
        )
        user._organization_roles = cached
    return cached


def organization_id_of(obj: models.Model) -> int | None:
    if isinstance(obj, Organization):
        return int(obj.pk)
    path = str(getattr(type(obj), "TENANT_ORGANIZATION_PATH", "organization"))
    target: Any = obj
    for step in path.split("__")[:-1]:
        target = getattr(target, step, None)
    value = getattr(target, f"{path.split('__')[-1]}_id", None)
    return None if value is None else int(value)


def role_grants(role: str, perm: str, obj: models.Model | None = None) -> bool:
    app_label, _, codename = perm.partition(".")
    if perm == APPROVE_CAMPAIGN:
        return role in (Role.ADMIN, Role.APPROVER)
    action, _, model = codename.partition("_")
    if app_label not in TENANT_APPS or model in PLATFORM_MODELS:
        return False
    if action == "view":
        return True
    if model == "organization":
        return role == Role.ADMIN and action == "change"
    if role == Role.ADMIN:
        return action in ("add", "change", "delete")
    if role == Role.SENDER and model in SENDER_MODELS and action in ("add", "change"):
        # Campaigns only while they are drafts: approval decides the rest.
        status = getattr(obj, "status", "draft") if model == "campaign" else None
        return status in (None, "draft")
    return False


class PasswordBackend(ModelBackend):
    """Django's username and password sign-in, without its permissions: a permission given to
    a user or a group directly would span every organization."""

    def get_user_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def get_group_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return False

    def with_perm(
        self,
        perm: str | Permission,
        is_active: bool = True,
        include_superusers: bool = True,
        obj: Any = None,
    ) -> Any:
        users = super().with_perm(perm, is_active=is_active, include_superusers=True, obj=obj)
        return users.filter(is_superuser=True) if include_superusers else users.none()


def is_platform_operator(user: Any) -> bool:
    """Superusers: the only people who see what spans organizations (queues, dead letters,
    archival runs, the dashboard)."""
    return bool(
        getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_superuser", False)
    )


class MembershipBackend(BaseBackend):
    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        if not getattr(user_obj, "is_active", False):
            return False
        roles = organization_roles(user_obj)
        if obj is not None:
            organization_id = organization_id_of(obj)
            role = roles.get(organization_id) if organization_id is not None else None
            return role is not None and role_grants(role, perm, obj)
        return any(role_grants(role, perm) for role in roles.values())

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return (
            getattr(user_obj, "is_active", False)
            and app_label in TENANT_APPS
            and bool(organization_roles(user_obj))
        )


def can_approve(user: Any, campaign: Any) -> bool:
    """Superusers, and the admins and approvers of the campaign's own organization."""
    if not getattr(user, "is_active", False):
        return False
    if user.is_superuser:
        return True
    return organization_roles(user).get(campaign.organization_id) in (Role.ADMIN, Role.APPROVER)


def approvable_organization_ids(user: Any) -> list[int] | None:
    """The organizations whose campaigns the person may approve; None: every organization."""
    return member_organization_ids(user, (Role.ADMIN, Role.APPROVER))


def member_organization_ids(user: Any, roles: tuple[str, ...]) -> list[int] | None:
    """The organizations where the person has one of these roles (none without a membership);
    None for superusers, who act on every organization."""
    if is_platform_operator(user):
        return None
    return [
        organization_id
        for organization_id, role in organization_roles(user).items()
        if role in roles
    ]
