"""Tenant scoping fails closed: the API's reads need an organization, or they raise."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import pytest
from django.apps import apps

import campaigns.selectors
import conversations.selectors
import whatsapp_platform.selectors
from campaigns.models import Campaign, CampaignAudience
from conversations.models import Contact, Message
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    OrganizationFactory,
)
from whatsapp_platform.models import Channel
from whatsapp_platform.tenancy import TenantManager, UnscopedTenantQuery

pytestmark = pytest.mark.django_db

TENANT_MODELS = [
    m for m in apps.get_models() if isinstance(getattr(m, "tenant", None), TenantManager)
]
SELECTOR_MODULES = [conversations.selectors, campaigns.selectors, whatsapp_platform.selectors]


def test_every_tenant_owned_model_has_the_scoped_manager() -> None:
    labels = {m._meta.label for m in TENANT_MODELS}

    assert {
        "whatsapp_platform.Channel",
        "whatsapp_platform.ApiKey",
        "conversations.Contact",
        "conversations.Conversation",
        "conversations.Message",
        "conversations.MediaAsset",
        "campaigns.MessageTemplate",
        "campaigns.Campaign",
        "campaigns.CampaignAudience",
        "webhooks.WebhookEvent",
    } <= labels


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.label)
@pytest.mark.parametrize(
    "query",
    [
        lambda manager: manager.all(),
        lambda manager: manager.filter(id=1),
        lambda manager: manager.get(id=1),
        lambda manager: manager.count(),
        lambda manager: manager.for_organization(None),
        lambda manager: manager.for_organization(1),
    ],
    ids=["all", "filter", "get", "count", "none", "an id"],
)
def test_a_query_without_an_organization_raises(model: Any, query: Any) -> None:
    with pytest.raises(UnscopedTenantQuery):
        list(query(model.tenant))


def test_a_scoped_query_returns_only_that_organizations_rows() -> None:
    acme, globex = OrganizationFactory(name="Acme"), OrganizationFactory(name="Globex")
    ours = MessageFactory(channel=ChannelFactory(organization=acme))
    MessageFactory(channel=ChannelFactory(organization=globex))
    campaign = CampaignFactory(organization=acme)
    CampaignAudience.objects.create(
        campaign=campaign, contact=ContactFactory(organization=acme, wa_id="4915100000001")
    )
    CampaignAudience.objects.create(
        campaign=CampaignFactory(organization=globex),
        contact=ContactFactory(organization=globex, wa_id="4915100000002"),
    )

    assert list(Message.tenant.for_organization(acme)) == [ours]
    assert set(Channel.tenant.for_organization(acme)) == set(
        Channel.objects.filter(organization=acme)
    )
    assert ours.channel in set(Channel.tenant.for_organization(acme))
    assert set(Contact.tenant.for_organization(acme)) == set(
        Contact.objects.filter(organization=acme)
    )
    assert [a.campaign for a in CampaignAudience.tenant.for_organization(acme)] == [campaign]
    assert list(Campaign.tenant.for_organizations([acme.id])) == [campaign]
    # Internal code (workers, admin) still sees every tenant through the default manager.
    assert Message.objects.count() == 2


def _selectors(module: ModuleType) -> list[Any]:
    return [
        function
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__
        and not name.startswith("_")
        and "organization" in inspect.signature(function).parameters
    ]


SELECTORS = [f for module in SELECTOR_MODULES for f in _selectors(module)]


def test_the_api_selectors_are_found() -> None:
    names = {f.__name__ for f in SELECTORS}

    assert {"message_get", "message_list", "campaign_list", "campaign_get", "channel_list"} <= names


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda f: f"{f.__module__}.{f.__name__}")
def test_every_selector_refuses_a_missing_organization(selector: Any) -> None:
    MessageFactory()  # rows exist: an unscoped read would return them
    CampaignFactory()
    arguments: dict[str, Any] = {}
    for name, parameter in inspect.signature(selector).parameters.items():
        if name == "organization":
            arguments[name] = None
        elif parameter.default is inspect.Parameter.empty:
            arguments[name] = 1

    # Raised at once, before any lazy queryset is evaluated.
    with pytest.raises(UnscopedTenantQuery):
        selector(**arguments)
