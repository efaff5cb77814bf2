"""Tenancy: organizations, their WhatsApp channels and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from typing import ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from whatsapp_platform.lib.fields import EncryptedTextField
from whatsapp_platform.lib.models import TimestampedModel
from whatsapp_platform.tenancy import TenantManager

e164_digits = RegexValidator(
    r"^[1-9]\d{6,14}$", "Enter the number as E.164 digits, e.g. 15551234567."
)
whatsapp_address = RegexValidator(
    r"^whatsapp:\+[1-9]\d{6,14}$", "Enter the sender as whatsapp:+E164, e.g. whatsapp:+15551234567."
)


class Organization(TimestampedModel):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    is_active = models.BooleanField(default=True)
    # Retention: days before messages go to the archive (empty: ARCHIVE_THRESHOLD_DAYS). A legal
    # hold exempts the organization from archival and deletion.
    archive_after_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Days before messages are archived; empty uses the platform default.",
    )
    legal_hold = models.BooleanField(
        default=False, help_text="Exempt from archival and deletion while set."
    )

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class MessagingTier(models.IntegerChoices):
    TIER_250 = 250, "250"
    TIER_2K = 2_000, "2,000"
    TIER_10K = 10_000, "10,000"
    TIER_100K = 100_000, "100,000"


class Channel(TimestampedModel):
    """One WhatsApp sender of an organization, on one provider."""

    class Provider(models.TextChoices):
        META = "meta", "Meta Cloud API"
        TWILIO = "twilio", "Twilio"
        CONSOLE = "console", "Console (sandbox)"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="channels"
    )
    name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    is_active = models.BooleanField(default=True)
    # Meta Cloud API
    waba_id = models.CharField("WABA id", max_length=64, blank=True)
    phone_number_id = models.CharField(max_length=64, blank=True)
    display_phone_number = models.CharField(max_length=20, blank=True)
    access_token = EncryptedTextField(blank=True)
    app_secret = EncryptedTextField(blank=True)
    webhook_verify_token = EncryptedTextField(blank=True)
    # Twilio (and the console sandbox's own address)
    account_sid = models.CharField(max_length=64, blank=True)
    auth_token = EncryptedTextField(blank=True)
    sender = models.CharField(max_length=32, blank=True, validators=[whatsapp_address])
    # Set when the sender sits in a Messaging Service pool: webhooks then name the service.
    messaging_service_sid = models.CharField(max_length=64, blank=True)
    # The provider's throughput limit for this number (Meta: 80 by default, up to 1,000).
    messages_per_second = models.PositiveIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    # Meta's messaging limit: new business-initiated conversations per rolling 24 hours.
    # Empty means unlimited.
    messaging_tier = models.PositiveIntegerField(
        choices=MessagingTier.choices,
        default=MessagingTier.TIER_250,
        null=True,
        blank=True,
        help_text="New business-initiated conversations per rolling 24 hours; empty is unlimited.",
    )
    # Set when the provider rejected the credentials; shown in the admin until they are fixed.
    credential_error = models.TextField(blank=True)
    credential_error_at = models.DateTimeField(null=True, blank=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = (
        "access_token",
        "app_secret",
        "webhook_verify_token",
        "auth_token",
    )

    class Meta:
        constraints = (
            # Meta's webhooks name the phone_number_id: it routes to exactly one channel.
            models.UniqueConstraint(
                fields=("phone_number_id",),
                condition=models.Q(provider="meta"),
                name="channel_unique_meta_phone_number_id",
                violation_error_message="A channel with this phone number id already exists.",
            ),
            # Twilio's webhooks name the sender address.
            models.UniqueConstraint(
                fields=("provider", "sender"),
                condition=~models.Q(provider="meta"),
                name="channel_unique_sender",
                violation_error_message="A channel with this sender already exists.",
            ),
            models.CheckConstraint(
                condition=~models.Q(provider="meta") | ~models.Q(phone_number_id=""),
                name="channel_meta_has_phone_number_id",
                violation_error_message="A Meta channel needs its phone number id.",
            ),
            models.CheckConstraint(
                condition=models.Q(provider="meta") | ~models.Q(sender=""),
                name="channel_others_have_sender",
                violation_error_message="A Twilio or console channel needs its sender.",
            ),
        )

    def __str__(self) -> str:
        return self.name or f"{self.organization} · {self.address}"

    @property
    def address(self) -> str:
        """The number customers write to, as the provider names it."""
        if self.provider == self.Provider.META:
            return self.display_phone_number or self.phone_number_id
        return self.sender


class ApiKey(TimestampedModel):
    """An organization's key to the REST API. Only its SHA-256 is stored; the key is shown once."""

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    PREFIX = "wpk_"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=200)
    # The first characters of the key, so people can tell their keys apart.
    key_prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def hash_key(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    def set_new_key(self) -> str:
        """Give this key a fresh secret and return it: the only time it is ever visible."""
        raw_key = self.PREFIX + secrets.token_urlsafe(32)
        self.key_prefix = raw_key[: len(self.PREFIX) + 6]
        self.key_hash = self.hash_key(raw_key)
        return raw_key

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None or self.revoked_at > timezone.now()


class Heartbeat(models.Model):
    """The last sign of life of a process or queue (beat, a worker's queue)."""

    name = models.CharField(max_length=100, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class Membership(TimestampedModel):
    """A person's role in one organization; what it allows is in whatsapp_platform/roles.py."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin: everything in the organization"
        APPROVER = "approver", "Approver: views everything, approves campaigns"
        SENDER = "sender", "Sender: messages and campaign drafts"
        VIEWER = "viewer", "Viewer: views only"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices)

    objects = models.Manager()
    tenant = TenantManager()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("user", "organization"),
                name="membership_unique_user_organization",
                violation_error_message="This person already has a role in this organization.",
            ),
        )

    def __str__(self) -> str:
        return f"{self.user} · {self.organization} ({self.role})"
