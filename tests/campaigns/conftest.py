from __future__ import annotations

from collections.abc import Iterable

import pytest
from django.contrib.auth.models import User

from campaigns.models import Campaign, CampaignAudience
from conversations.models import Contact
from tests.factories import ContactFactory


@pytest.fixture
def sender() -> User:
    return User.objects.create_user("sam", password="pw", is_staff=True)


@pytest.fixture
def approver() -> User:
    """A superuser, who approves any organization's campaigns (approvers by membership:
    tests/isolation/test_roles.py)."""
    return User.objects.create_superuser("alice", password="pw")


@pytest.fixture
def second_approver() -> User:
    return User.objects.create_superuser("bob", password="pw")


def add_audience(campaign: Campaign, contacts: Iterable[Contact] | int) -> list[CampaignAudience]:
    """Recipients for a campaign: the given contacts, or that many new ones."""
    people: Iterable[Contact] = (
        ContactFactory.create_batch(contacts, organization=campaign.organization)
        if isinstance(contacts, int)
        else contacts
    )
    return CampaignAudience.objects.bulk_create(
        CampaignAudience(campaign=campaign, contact=contact, variables={"1": "A-1"})
        for contact in people
    )
