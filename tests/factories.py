from __future__ import annotations

import factory

from campaigns.models import Campaign, MessageTemplate
from conversations.models import Contact, Message
from whatsapp_platform.models import Channel, Organization


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Organization {n}")
    slug = factory.Sequence(lambda n: f"organization-{n}")


class ChannelFactory(factory.django.DjangoModelFactory):
    """A Meta Cloud API channel."""

    class Meta:
        model = Channel

    organization = factory.SubFactory(OrganizationFactory)
    provider = Channel.Provider.META
    waba_id = factory.Sequence(lambda n: f"10{n:08d}")
    phone_number_id = factory.Sequence(lambda n: f"20{n:08d}")
    display_phone_number = factory.Sequence(lambda n: f"1555{n:07d}")
    access_token = "EAAG-test-access-token"
    app_secret = "meta-app-secret"
    webhook_verify_token = "verify-me"


class TwilioChannelFactory(ChannelFactory):
    provider = Channel.Provider.TWILIO
    waba_id = ""
    phone_number_id = ""
    display_phone_number = ""
    access_token = ""
    app_secret = ""
    webhook_verify_token = ""
    account_sid = "AC" + "0" * 32
    auth_token = "twilio-auth-token"
    sender = factory.Sequence(lambda n: f"whatsapp:+1444{n:07d}")


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    organization = factory.SubFactory(OrganizationFactory)
    wa_id = factory.Sequence(lambda n: f"3161{n:07d}")
    profile_name = factory.Faker("name")


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    channel = factory.SubFactory(ChannelFactory)
    organization = factory.SelfAttribute("channel.organization")
    contact = factory.SubFactory(
        ContactFactory, organization=factory.SelfAttribute("..organization")
    )
    provider = factory.SelfAttribute("channel.provider")
    direction = Message.Direction.OUTBOUND
    status = Message.Status.PENDING
    text = "Hello"


class MessageTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MessageTemplate

    channel = factory.SubFactory(ChannelFactory)
    organization = factory.SelfAttribute("channel.organization")
    name = factory.Sequence(lambda n: f"order_update_{n}")
    category = MessageTemplate.Category.UTILITY
    body = "Your order {{1}} has shipped."
    status = MessageTemplate.Status.APPROVED


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    template = factory.SubFactory(MessageTemplateFactory)
    channel = factory.SelfAttribute("template.channel")
    organization = factory.SelfAttribute("template.organization")
    name = factory.Sequence(lambda n: f"Campaign {n}")
