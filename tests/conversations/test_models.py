"""Rules that belong to the messaging data itself."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from conversations.models import Contact, Message
from tests.factories import ContactFactory, MessageFactory, OrganizationFactory

S = Message.Status


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (S.QUEUED, S.SENT, True),
        (S.SENT, S.DELIVERED, True),
        (S.DELIVERED, S.READ, True),
        (S.READ, S.DELIVERED, False),
        (S.DELIVERED, S.SENT, False),
        (S.SENT, S.FAILED, True),
        (S.FAILED, S.SENT, False),
        (S.FAILED, S.DELIVERED, True),
        (S.READ, S.FAILED, False),
        (S.READ, S.READ, False),
    ],
)
def test_a_message_status_only_moves_forward(current: str, new: str, allowed: bool) -> None:
    assert Message(status=current).can_move_to(new) is allowed


@pytest.mark.django_db
def test_a_provider_message_id_is_stored_once_per_provider() -> None:
    MessageFactory(provider_message_id="wamid.ABC")

    with pytest.raises(IntegrityError):
        MessageFactory(provider_message_id="wamid.ABC")


@pytest.mark.django_db
def test_contacts_are_keyed_on_phone_number_or_business_scoped_id() -> None:
    organization = OrganizationFactory()
    ContactFactory(organization=organization, wa_id=None, user_id="US.13491208655302741918")
    ContactFactory(organization=organization, wa_id="15551234567", user_id=None)
    ContactFactory(wa_id="15551234567")  # another organization may know the same person

    with pytest.raises(IntegrityError):
        ContactFactory(organization=organization, wa_id="15551234567")


@pytest.mark.django_db
def test_a_contact_needs_a_phone_number_or_a_business_scoped_id() -> None:
    with pytest.raises(IntegrityError):
        Contact.objects.create(organization=OrganizationFactory(), wa_id=None, user_id=None)
