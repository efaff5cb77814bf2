"""Reads of tenancy data, always scoped to one organization."""

from __future__ import annotations

from django.db.models import QuerySet

from whatsapp_platform.models import Channel, Organization


def channel_list(*, organization: Organization) -> QuerySet[Channel]:
    return Channel.tenant.for_organization(organization).order_by("id")
