"""Two organizations, Acme and Globex, and people with a role in one of them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign
from conversations.models import Message
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    MessageFactory,
    MessageTemplateFactory,
    OrganizationFactory,
)
from whatsapp_platform.models import Channel, Membership, Organization


@dataclass
class Tenant:
    organization: Organization
    channel: Channel
    campaign: Campaign  # pending approval, submitted by someone else
    message: Message


def _tenant(name: str, submitter: User) -> Tenant:
    organization = OrganizationFactory(name=name)
    channel = ChannelFactory(organization=organization)
    message = MessageFactory(channel=channel)
    campaign = CampaignFactory(
        name=f"campaign of {name}",
        template=MessageTemplateFactory(channel=channel),
        status=Campaign.Status.PENDING_APPROVAL,
        submitted_by=submitter,
    )
    return Tenant(organization, channel, campaign, message)


@pytest.fixture
def tenants() -> tuple[Tenant, Tenant]:
    submitter = User.objects.create_user("submitter", is_staff=True)
    return _tenant("Acme", submitter), _tenant("Globex", submitter)


def member(role: str, organization: Organization) -> Client:
    user = User.objects.create_user(f"{role}-{organization.slug}", is_staff=True)
    Membership.objects.create(user=user, organization=organization, role=role)
    client = Client()
    client.force_login(user)
    return client


def change_url(obj: object) -> str:
    opts = obj._meta  # type: ignore[attr-defined]
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])  # type: ignore[attr-defined]
