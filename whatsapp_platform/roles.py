"""What each role of a membership allows, as Django permissions granted per organization.

`MembershipBackend` answers `user.has_perm(...)`: without an object, whether any of the
person's organizations grants it (so the admin shows the page); with an object, whether the
object's own organization does. Superusers keep every permission through Django's own backend.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend, ModelBackend
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
    """Superusers, platform approvers (the Django permission itself), and the admins and
    approvers of the campaign's own organization."""
    if not getattr(user, "is_active", False):
        return False
    if user.is_superuser or ModelBackend().has_perm(user, APPROVE_CAMPAIGN):
        return True
    return organization_roles(user).get(campaign.organization_id) in (Role.ADMIN, Role.APPROVER)


def approvable_organization_ids(user: Any) -> list[int] | None:
    """The organizations whose campaigns the person may approve; None: every organization."""
    if user.is_superuser or ModelBackend().has_perm(user, APPROVE_CAMPAIGN):
        return None
    return [
        organization_id
        for organization_id, role in organization_roles(user).items()
        if role in (Role.ADMIN, Role.APPROVER)
    ]


def member_organization_ids(user: Any, roles: tuple[str, ...]) -> list[int] | None:
    """The organizations where a member has one of these roles; None for superusers and for
    platform staff without memberships, who act on every organization."""
    if getattr(user, "is_superuser", False):
        return None
    memberships = organization_roles(user)
    if not memberships:
        return None
    return [organization_id for organization_id, role in memberships.items() if role in roles]
