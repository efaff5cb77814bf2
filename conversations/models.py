"""The messaging core: contacts, conversations, every message in or out, and its media."""

from __future__ import annotations

from typing import ClassVar

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from conversations.types import StatusUpdate
from whatsapp_platform.lib.models import TimestampedModel
from whatsapp_platform.models import Channel, Organization
from whatsapp_platform.tenancy import TenantManager


class Contact(TimestampedModel):
    """A WhatsApp user as an organization knows them.

    Since 2026 a user with a username may arrive with only a business-scoped user id (BSUID) and
    no phone number, so a contact is keyed on either, never on the phone number alone.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="contacts"
    )
    wa_id = models.CharField("WhatsApp id (E.164 digits)", max_length=20, null=True, blank=True)
    user_id = models.CharField("business-scoped user id", max_length=160, null=True, blank=True)
    username = models.CharField(max_length=100, blank=True)
    profile_name = models.CharField(max_length=200, blank=True)
    opted_out_at = models.DateTimeField(null=True, blank=True)
    # The per-contact marketing frequency cap, and Meta's own (131049): no marketing template
    # goes out before marketing_held_until.
    last_marketing_at = models.DateTimeField(null=True, blank=True)
    marketing_held_until = models.DateTimeField(null=True, blank=True)
    # Start of the 24-hour customer-service window: free-form messages are allowed until +24 h.
    last_inbound_at = models.DateTimeField(null=True, blank=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            # NULLs are distinct: a contact may lack either identity. Plain (not partial)
            # unique indexes, so that lookups by either use them.
            models.UniqueConstraint(fields=("organization", "wa_id"), name="contact_unique_wa_id"),
            models.UniqueConstraint(
                fields=("organization", "user_id"), name="contact_unique_user_id"
            ),
            models.CheckConstraint(
                condition=models.Q(wa_id__isnull=False) | models.Q(user_id__isnull=False),
                name="contact_has_an_identity",
            ),
        )

    def __str__(self) -> str:
        return self.profile_name or self.username or f"Contact {self.pk}"

    @property
    def is_opted_out(self) -> bool:
        return self.opted_out_at is not None


class Conversation(TimestampedModel):
    """The thread between one channel and one contact, and the state of its AI replies."""

    class Status(models.TextChoices):
        OPEN = "open"
        REPLY_PENDING = "reply_pending", "Reply pending"
        PROCESSING_REPLY = "processing_reply", "Processing reply"
        REPLY_SENT = "reply_sent", "Reply sent"
        RETRY = "retry"
        HANDOVER = "handover", "Handed over to a human"
        CLOSED = "closed"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="conversations"
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="conversations")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="conversations")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # AI replies: when the debounced reply is due, who holds the reply lease and until when,
    # the provider-side conversation state, and whether a human has taken over.
    reply_due_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    ai_conversation_id = models.CharField(max_length=100, blank=True)
    needs_human = models.BooleanField(default=False)
    handed_over_at = models.DateTimeField(null=True, blank=True)
    # Sending: the last message out (Meta's pair rate limit, one message per user every few
    # seconds) and when the last business-initiated conversation opened (the messaging tier
    # counts those per rolling 24 hours).
    last_outbound_at = models.DateTimeField(null=True, blank=True)
    business_initiated_at = models.DateTimeField(null=True, blank=True)
    # AI replies: the last inbound message a reply (the AI's or a human's) covered, and the last
    # message the model has seen in its stored conversation state.
    answered_until_id = models.BigIntegerField(default=0)
    ai_context_until_id = models.BigIntegerField(default=0)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("channel", "contact"), name="conversation_unique_thread"
            ),
        )
        indexes = (
            # The messaging tier: conversations a channel opened in the last 24 hours.
            models.Index(
                fields=("channel", "business_initiated_at"),
                condition=models.Q(business_initiated_at__isnull=False),
                name="conversation_initiated_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.contact} on {self.channel}"


class Message(TimestampedModel):
    class Direction(models.TextChoices):
        INBOUND = "in", "Inbound"
        OUTBOUND = "out", "Outbound"

    class Type(models.TextChoices):
        TEXT = "text"
        TEMPLATE = "template"
        IMAGE = "image"
        AUDIO = "audio"
        VIDEO = "video"
        DOCUMENT = "document"
        STICKER = "sticker"
        LOCATION = "location"
        CONTACTS = "contacts"
        INTERACTIVE = "interactive"
        BUTTON = "button"
        REACTION = "reaction"
        ORDER = "order"
        SYSTEM = "system"
        UNSUPPORTED = "unsupported"

    class Priority(models.IntegerChoices):
        HIGH = 0
        NORMAL = 5
        LOW = 9

    class Status(models.TextChoices):
        RECEIVED = "received"  # inbound
        PENDING = "pending"  # outbound, written before it is handed to the provider
        QUEUED = "queued"
        SENDING = "sending"
        # The worker died between the provider call and recording its answer: reconciled from
        # the status webhooks, which carry our message id; sent again once if none named it
        # within SEND_UNKNOWN_RESEND_AFTER_SECONDS (the provider never accepted it).
        UNKNOWN = "unknown"
        SENT = "sent"
        DELIVERED = "delivered"
        READ = "read"
        FAILED = "failed"

    # A status only moves forward. `failed` ends a send and a late `sent` does not undo it, but a
    # later delivered or read does: providers report that for users on several devices.
    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    STATUS_RANK: ClassVar[dict[str, int]] = {
        Status.RECEIVED: 0,
        Status.PENDING: 0,
        Status.QUEUED: 1,
        Status.SENDING: 2,
        Status.UNKNOWN: 2,
        Status.SENT: 3,
        Status.FAILED: 4,
        Status.DELIVERED: 5,
        Status.READ: 6,
    }
    # Platform error codes of sends that the sending rules stopped before any provider call
    # (checked when each message goes out): campaign statistics count these as skipped.
    ERROR_OPTED_OUT = "opted_out"
    ERROR_OUTSIDE_WINDOW = "outside_window"  # free-form more than 24 h after the last inbound
    ERROR_FREQUENCY_CAP = "frequency_cap"  # a marketing template already went out recently
    ERROR_MARKETING_HELD = "marketing_held"  # Contact.marketing_held_until (Meta 131049/131050)
    SKIP_CODES: ClassVar[frozenset[str]] = frozenset(
        {ERROR_OPTED_OUT, ERROR_OUTSIDE_WINDOW, ERROR_FREQUENCY_CAP, ERROR_MARKETING_HELD}
    )
    STATUS_TIMESTAMP: ClassVar[dict[str, str]] = {
        Status.QUEUED: "queued_at",
        Status.SENT: "sent_at",
        Status.DELIVERED: "delivered_at",
        Status.READ: "read_at",
        Status.FAILED: "failed_at",
    }

    # No index of their own: message_organization_idx and message_conversation_idx begin with
    # them, and every index is written again by each of a send's updates.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="messages")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
        db_index=False,
    )
    direction = models.CharField(max_length=3, choices=Direction.choices)
    # Copied from the channel so the provider's id can be unique per provider.
    provider = models.CharField(max_length=16, choices=Channel.Provider.choices)
    provider_message_id = models.CharField(max_length=200, null=True, blank=True)
    type = models.CharField(max_length=20, choices=Type.choices, default=Type.TEXT)
    text = models.TextField(blank=True)
    content = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    # Sending: how many provider calls were attempted, when the next may start (back-off,
    # pacing), and when the current attempt claimed the message.
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    send_started_at = models.DateTimeField(null=True, blank=True)
    # An `unknown` send that no status webhook named within the reconciliation window was sent
    # again, at most once, as this same row (so a late status of the first attempt still finds
    # it). Should the provider report that first attempt after all, its id is kept here: the
    # recipient got the message twice.
    resent_at = models.DateTimeField(null=True, blank=True)
    earlier_provider_message_id = models.CharField(max_length=200, null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    error_message = models.TextField(blank=True)
    # No database constraint on the five references to a message (this one, MediaAsset.message,
    # AiReply.message, campaigns' CampaignAudience.message, monitoring's AnalyticsEvent.message):
    # PostgreSQL would check each of them for every message deleted, which was most of the cost
    # of an archival batch. `on_delete` still applies to every ORM delete, archival clears or
    # takes along every reference itself (archival.services._references), and the rows that
    # link to an existing message look it up, locked, in the transaction that links it
    # (conversations.selectors.message_locked_for_link).
    reply_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replies",
        db_constraint=False,
    )
    # Meta's conversation and pricing objects from status updates, when present.
    billing = models.JSONField(default=dict, blank=True)
    # The caller's key for a send, so a repeated API call does not send twice.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # A campaign's messages are reached through campaigns.CampaignAudience.message.

    class Meta:
        constraints = (
            # Status updates look messages up by these ids, in batches: a plain unique index
            # (NULLs are distinct), which the planner uses for `IN (...)` lookups.
            models.UniqueConstraint(
                fields=("provider", "provider_message_id"),
                name="message_unique_provider_message_id",
            ),
            models.UniqueConstraint(
                fields=("organization", "idempotency_key"), name="message_unique_idempotency_key"
            ),
        )
        indexes = (
            # Archival reads old messages in keyset order: created_at < cutoff, by (created_at, id).
            models.Index(fields=("created_at", "id"), name="message_age_idx"),
            # A conversation's history, newest first (AI context, the admin).
            models.Index(fields=("conversation", "-created_at"), name="message_conversation_idx"),
            # An organization's message list in the API, newest first.
            models.Index(fields=("organization", "-created_at"), name="message_organization_idx"),
            # The send sweeper: queued messages whose task never reached the broker, and
            # claimed ones whose worker died.
            models.Index(
                fields=("queued_at",),
                condition=models.Q(status="queued"),
                name="message_queued_idx",
            ),
            # Keyed on the id, not on send_started_at: the update that marks a call started
            # then changes no indexed column, and PostgreSQL can keep it on its page (HOT)
            # without writing every index again. These few rows are read whole anyway.
            models.Index(
                fields=("id",),
                condition=models.Q(status="sending"),
                name="message_sending_idx",
            ),
            # The resend of unknown sends that no status named within the window.
            models.Index(
                fields=("id",),
                condition=models.Q(status="unknown"),
                name="message_unknown_idx",
            ),
        )

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.type} {self.pk}"

    @classmethod
    def statuses_before(cls, status: str) -> list[str]:
        """The statuses a message may move from to reach `status`."""
        rank = cls.STATUS_RANK[status]
        return [s for s, r in cls.STATUS_RANK.items() if r < rank]

    def can_move_to(self, status: str) -> bool:
        return self.status in self.statuses_before(status)


class SendRate(models.Model):
    """The pacing of one channel's sends, shared by every worker on every machine.

    A generic cell rate algorithm: `next_slot_at` is the earliest time the next message may go
    out. Workers reserve slots for a batch with one conditional UPDATE of this row, so the
    channel's messages-per-second limit holds across all of them together.
    """

    channel = models.OneToOneField(
        Channel, on_delete=models.CASCADE, primary_key=True, related_name="send_rate"
    )
    next_slot_at = models.DateTimeField()
    # The last send that was not campaign traffic: while such sends flow, campaigns keep to
    # their share of the limit.
    priority_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Send rate of channel {self.channel_id}"


class PendingStatus(models.Model):
    """A status update for a provider message id not recorded yet.

    A status can arrive before our own send call has returned the id; it waits here and is
    applied as soon as the message records that id.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    provider = models.CharField(max_length=16, choices=Channel.Provider.choices)
    provider_message_id = models.CharField(max_length=200)
    status = models.CharField(max_length=12, choices=Message.Status.choices)
    occurred_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    error_title = models.TextField(blank=True)
    error_details = models.TextField(blank=True)
    extra = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = (
            # Looked up when a message records its provider id.
            models.Index(fields=("provider", "provider_message_id"), name="pending_status_idx"),
        )

    def __str__(self) -> str:
        return f"{self.status} for {self.provider_message_id}"

    @classmethod
    def from_update(
        cls, *, organization: Organization, provider: str, update: StatusUpdate
    ) -> PendingStatus:
        return cls(
            organization=organization,
            provider=provider,
            provider_message_id=update.provider_message_id,
            status=update.status,
            occurred_at=update.timestamp,
            error_code=update.error_code,
            error_title=update.error_title,
            error_details=update.error_details,
            extra=update.extra,
        )

    def as_update(self) -> StatusUpdate:
        return StatusUpdate(
            provider_message_id=self.provider_message_id,
            status=self.status,
            timestamp=self.occurred_at,
            error_code=self.error_code,
            error_title=self.error_title,
            error_details=self.error_details,
            extra=self.extra,
        )


class MediaAsset(TimestampedModel):
    class State(models.TextChoices):
        PENDING = "pending"
        STORED = "stored"
        ARCHIVED = "archived"
        FAILED = "failed"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="media_assets"
    )
    # Without a database constraint: see Message.reply_to.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="media", db_constraint=False
    )
    provider_media_id = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    mime_type = models.CharField(max_length=100, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    error = models.TextField(blank=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        indexes = (
            # Media archival: assets past the threshold that are not archived yet.
            models.Index(
                fields=("created_at", "id"),
                condition=~models.Q(state="archived"),
                name="media_unarchived_age_idx",
            ),
        )

    def __str__(self) -> str:
        return self.filename or self.provider_media_id or f"Media {self.pk}"


class Assistant(TimestampedModel):
    """The AI assistant that answers a channel's customers, and how it does."""

    TENANT_ORGANIZATION_PATH = "channel__organization"
    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    DEFAULT_FALLBACK = "Thanks for your message. A member of our team will get back to you soon."

    channel = models.OneToOneField(Channel, on_delete=models.CASCADE, related_name="assistant")
    enabled = models.BooleanField("AI replies on", default=False)
    model = models.CharField(max_length=100, default="gpt-4.1-mini")
    instructions = models.TextField(blank=True, help_text="The system prompt.")
    debounce_seconds = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="Messages within this many seconds of each other get one reply.",
    )
    history_size = models.PositiveSmallIntegerField(
        default=20,
        validators=[MaxValueValidator(200)],
        help_text="Earlier messages given to the model when it has not seen them yet.",
    )
    fallback_text = models.TextField(
        default=DEFAULT_FALLBACK, help_text="Sent once when the AI cannot answer."
    )
    handover_keywords = models.CharField(
        max_length=500,
        default="human, agent",
        blank=True,
        help_text="Comma-separated words that hand the conversation to a human.",
    )

    def __str__(self) -> str:
        return f"Assistant of {self.channel}"

    @property
    def keywords(self) -> list[str]:
        return [w.strip().lower() for w in self.handover_keywords.split(",") if w.strip()]


class AiReply(models.Model):
    """One answer the platform sent for a burst of inbound messages, and what it cost."""

    class Outcome(models.TextChoices):
        SENT = "sent", "AI answer"
        FALLBACK = "fallback", "Fallback text"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="ai_replies"
    )
    # Without a database constraint: see Message.reply_to.
    message = models.OneToOneField(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="ai_reply",
        db_constraint=False,
    )
    # The inbound messages answered: ids first_message_id..last_message_id of the conversation.
    first_message_id = models.BigIntegerField()
    last_message_id = models.BigIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    response_id = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = models.Manager()
    # The API's manager: rows only for one organization (whatsapp_platform/tenancy.py).
    tenant = TenantManager()

    class Meta:
        constraints = (
            # At most one reply per inbound message, whatever the redeliveries and races.
            models.UniqueConstraint(
                fields=("conversation", "last_message_id"), name="ai_reply_once_per_message"
            ),
        )
        indexes = (
            # The monthly token budget: an organization's replies since the 1st.
            models.Index(fields=("organization", "created_at"), name="ai_reply_organization_idx"),
        )

    def __str__(self) -> str:
        return f"AI reply {self.pk}"


class OrganizationAiUsage(Organization):
    """An organization seen from its AI token spending (the admin's usage page)."""

    class Meta:
        proxy = True
        verbose_name = "organization AI usage"
        verbose_name_plural = "organization AI usage"
