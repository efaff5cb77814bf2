"""Message templates, campaigns with their approval workflow, and campaign audiences."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models

from conversations.models import Contact, Message
from whatsapp_platform.lib.models import TimestampedModel
from whatsapp_platform.models import ApiKey, Channel, Organization
from whatsapp_platform.tenancy import TenantManager


class MessageTemplate(TimestampedModel):
    """A copy of a template approved at the provider (Meta's WhatsApp Manager, Twilio Content)."""

    class Category(models.TextChoices):
        MARKETING = "marketing"
        UTILITY = "utility"
        AUTHENTICATION = "authentication"

    class Status(models.TextChoices):
        APPROVED = "approved"
        PENDING = "pending"
        REJECTED = "rejected"
        PAUSED = "paused"
        DISABLED = "disabled"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="templates"
    )
    # Templates belong to a WhatsApp Business Account or Twilio account: synced per channel.
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="templates")
    name = models.CharField(max_length=512)
    language = models.CharField(max_length=15, default="en_US")
    category = models.CharField(max_length=20, choices=Category.choices)
    body = models.TextField(help_text="The body text, with {{1}}-style placeholders.")
    components = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    status_reason = models.TextField(blank=True)
    # Meta's template id; for Twilio, the Content SID (HX...) that sends it.
    provider_template_id = models.CharField(max_length=100, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("channel", "name", "language"),
                name="template_unique_name_language",
            ),
        )

    def __str__(self) -> str:
        return f"{self.name} ({self.language})"

    @property
    def is_sendable(self) -> bool:
        return self.status == self.Status.APPROVED


class Campaign(TimestampedModel):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PENDING_APPROVAL = "pending_approval", "Pending approval"
        APPROVED = "approved"
        REJECTED = "rejected"
        SCHEDULED = "scheduled"
        RUNNING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    # The workflow: draft → pending_approval → approved or rejected → scheduled → running ⇄ paused
    # → completed or cancelled. A rejected campaign can be edited and submitted again; an edit to a
    # pending, approved or scheduled campaign sends it back to draft, to be approved again.
    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        Status.DRAFT: frozenset({Status.PENDING_APPROVAL, Status.CANCELLED}),
        Status.PENDING_APPROVAL: frozenset(
            {Status.DRAFT, Status.APPROVED, Status.REJECTED, Status.CANCELLED}
        ),
        Status.REJECTED: frozenset({Status.DRAFT, Status.PENDING_APPROVAL, Status.CANCELLED}),
        Status.APPROVED: frozenset(
            {Status.DRAFT, Status.SCHEDULED, Status.RUNNING, Status.CANCELLED}
        ),
        Status.SCHEDULED: frozenset(
            {Status.DRAFT, Status.RUNNING, Status.PAUSED, Status.CANCELLED}
        ),
        Status.RUNNING: frozenset({Status.PAUSED, Status.COMPLETED, Status.CANCELLED}),
        # A paused campaign that never started and whose time is still ahead goes back to
        # scheduled when resumed.
        Status.PAUSED: frozenset({Status.RUNNING, Status.SCHEDULED, Status.CANCELLED}),
        Status.COMPLETED: frozenset(),
        Status.CANCELLED: frozenset(),
    }

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="campaigns"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="campaigns")
    template = models.ForeignKey(
        MessageTemplate, on_delete=models.PROTECT, related_name="campaigns"
    )
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    status_reason = models.TextField(blank=True, help_text="Why it was rejected or paused.")
    scheduled_for = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The campaign pauses itself after this many failed sends in a row.
    failure_threshold = models.PositiveIntegerField(default=50)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # The figures at completion, kept when its messages are archived.
    final_stats = models.JSONField(default=dict, blank=True)
    # Written by every round of the fan-out's chunk senders: when it stops moving, the sweeper
    # starts the fan-out again.
    fanout_heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = (("approve_campaign", "Can approve or reject campaigns"),)
        indexes = (
            # The scheduler looks for scheduled campaigns whose time has come.
            models.Index(
                fields=("scheduled_for",),
                condition=models.Q(status="scheduled"),
                name="campaign_scheduled_idx",
            ),
        )

    def __str__(self) -> str:
        return self.name

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS[self.status]


class CampaignAudience(TimestampedModel):
    """One recipient of a campaign. Its delivery status is its message's: one source of truth."""

    class State(models.TextChoices):
        PENDING = "pending"
        QUEUED = "queued"
        SKIPPED = "skipped"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="audience")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="campaign_entries")
    variables = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    skip_reason = models.CharField(max_length=200, blank=True)
    # Without a database constraint: see conversations.models.Message.reply_to.
    message = models.OneToOneField(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="campaign_audience",
        db_constraint=False,
    )

    TENANT_ORGANIZATION_PATH = "campaign__organization"
    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            # Never twice to one person.
            models.UniqueConstraint(fields=("campaign", "contact"), name="audience_unique_contact"),
        )
        indexes = (
            # Fan-out takes the next pending recipients of a campaign in id order.
            models.Index(
                fields=("campaign", "id"),
                condition=models.Q(state="pending"),
                name="audience_pending_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.contact} in {self.campaign}"


class AudienceImport(TimestampedModel):
    """A large audience file imported in the background: its stored file, state and report.

    Smaller files are imported within the request and leave no row.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="imports")
    # Who uploaded it: a person in the admin, or an organization's API key.
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    file_name = models.CharField(max_length=255, blank=True)
    file_size = models.PositiveBigIntegerField(default=0)
    # The file's key in the archive storage; the file is deleted once the import has ended.
    file_key = models.CharField(max_length=300, editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    report = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Runs started (redeliveries and requeues included): the sweeper gives up after a few.
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    TENANT_ORGANIZATION_PATH = "campaign__organization"
    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        indexes = (
            # The API and the campaign page list a campaign's imports, newest first.
            models.Index(fields=("campaign", "-id"), name="audience_import_campaign_idx"),
            # The sweeper looks for imports that have not ended.
            models.Index(
                fields=("updated_at",),
                condition=models.Q(state__in=("queued", "running")),
                name="audience_import_open_idx",
            ),
        )

    def __str__(self) -> str:
        return f"Import {self.id} into {self.campaign_id} ({self.state})"

    @property
    def has_ended(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.FAILED)
