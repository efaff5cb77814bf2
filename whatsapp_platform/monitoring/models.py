"""What operations keep in the database: task failures (for the error-rate alert), queue depth
samples (the dashboard's last hour), client analytics events, and the campaign funnel view."""

from __future__ import annotations

from django.db import models

from campaigns.models import Campaign
from conversations.models import Message
from whatsapp_platform.models import Organization
from whatsapp_platform.tenancy import TenantManager


class TaskFailure(models.Model):
    """A task run that raised: retried, or failed for good and dead-lettered."""

    class Kind(models.TextChoices):
        RETRY = "retry"
        FAILED = "failed"

    task = models.CharField(max_length=200)
    task_id = models.CharField(max_length=64, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # The exception's type only: its message may quote personal data.
    error = models.CharField(max_length=200, blank=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)  # the alert's window

    def __str__(self) -> str:
        return f"{self.task} {self.kind}"


class QueueSample(models.Model):
    """One queue's depths, sampled every minute by the alerts beat task."""

    queue = models.CharField(max_length=100)
    visible = models.PositiveIntegerField()
    in_flight = models.PositiveIntegerField()
    delayed = models.PositiveIntegerField()
    dead_letters = models.PositiveIntegerField()
    sampled_at = models.DateTimeField(db_index=True)  # the dashboard reads the last hour

    def __str__(self) -> str:
        return f"{self.queue} at {self.sampled_at:%H:%M}"


class AnalyticsEvent(models.Model):
    """An event a client recorded in its own app, e.g. a click on a campaign's button."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # The client's id of the event: a retried request or task stores it once.
    event_id = models.CharField(max_length=100)
    name = models.CharField(max_length=100)
    campaign = models.ForeignKey(
        Campaign, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Without a database constraint: see conversations.models.Message.reply_to.
    message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
    )
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("organization", "event_id"), name="analytics_event_unique_event_id"
            ),
        )
        indexes = (
            # The campaign funnel counts events by name.
            models.Index(fields=("campaign", "name"), name="analytics_event_campaign_idx"),
        )

    def __str__(self) -> str:
        return f"{self.name} {self.event_id}"


class CampaignFunnel(Campaign):
    """The admin's view of a campaign's funnel: sent → delivered → read → replied, and events."""

    class Meta:
        proxy = True
        verbose_name = "campaign funnel"
