"""The audit trail of every accepted webhook, and the work queue of their processing."""

from __future__ import annotations

from django.db import models

from whatsapp_platform.models import Channel, Organization
from whatsapp_platform.tenancy import TenantManager


class WebhookEvent(models.Model):
    class Provider(models.TextChoices):
        META = "meta"
        TWILIO = "twilio"

    class Kind(models.TextChoices):
        MESSAGES = "messages"
        STATUSES = "statuses"
        TEMPLATE_STATUS = "template_status", "Template status"
        OTHER = "other"

    class State(models.TextChoices):
        RECEIVED = "received"
        QUEUED = "queued"
        PROCESSED = "processed"
        FAILED = "failed"
        UNROUTABLE = "unroutable"
        IGNORED = "ignored"

    provider = models.CharField(max_length=10, choices=Provider.choices)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    channel = models.ForeignKey(
        Channel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The body exactly as received: JSON for Meta, form-encoded for Twilio.
    body = models.TextField()
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OTHER)
    # A redelivery of the same webhook has the same key and is stored once.
    dedupe_key = models.CharField(max_length=128, unique=True)
    # Kept so that processing checks each item against its own channel's secret (Meta).
    signature = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        indexes = (
            # The sweep re-enqueues events left `received` (the broker was down).
            models.Index(
                fields=("received_at",),
                condition=models.Q(state="received"),
                name="webhook_event_stale_idx",
            ),
            models.Index(
                fields=("queued_at",),
                condition=models.Q(state="queued"),
                name="webhook_event_queued_idx",
            ),
            # Archival reads old events in keyset order.
            models.Index(fields=("received_at", "id"), name="webhook_event_age_idx"),
        )

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.pk}"
