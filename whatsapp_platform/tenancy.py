"""Tenant scoping that fails closed.

Every tenant-owned model has two managers. `objects`, the default, sees every organization's
rows: workers, the admin, commands and migrations act across tenants by design. `tenant` is
the manager of the API and its selectors: it hands out rows only through
`for_organization(organization)` (or `for_organizations(ids)`), which refuses a missing
organization, and any other use (`Model.tenant.all()`, `.filter()`, `.get()`) raises
`UnscopedTenantQuery` instead of returning everyone's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from django.db import models

if TYPE_CHECKING:
    from whatsapp_platform.models import Organization

_M = TypeVar("_M", bound=models.Model)


class UnscopedTenantQuery(RuntimeError):
    """A query on tenant-owned rows without an organization."""


class TenantManager(models.Manager[_M]):
    def _organization_path(self) -> str:
        # Models that reach their organization through another row name the lookup.
        return str(getattr(self.model, "TENANT_ORGANIZATION_PATH", "organization"))

    def get_queryset(self) -> models.QuerySet[_M]:
        raise UnscopedTenantQuery(
            f"{self.model._meta.label} rows are read for one organization: "
            f"use {self.model.__name__}.tenant.for_organization(organization)."
        )

    def for_organization(self, organization: Organization | None) -> models.QuerySet[_M]:
        from whatsapp_platform.models import Organization

        if not isinstance(organization, Organization) or organization.pk is None:
            raise UnscopedTenantQuery(
                f"{self.model._meta.label} rows are read for one organization, not {organization!r}."
            )
        return super().get_queryset().filter(**{self._organization_path(): organization})

    def for_organizations(self, organization_ids: Iterable[int]) -> models.QuerySet[_M]:
        """The rows of several organizations: those a person belongs to."""
        ids = [int(i) for i in organization_ids]
        return super().get_queryset().filter(**{f"{self._organization_path()}__in": ids})
