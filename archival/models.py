"""The audit trail of archival: what each run moved, where, and how it ended."""

from __future__ import annotations

from django.db import models


class ArchiveRun(models.Model):
    class JobType(models.TextChoices):
        MESSAGES = "messages"
        MEDIA = "media"
        RESTORE = "restore"
        ERASE = "erase"

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        ADMIN = "admin"
        API = "api"
        COMMAND = "command"

    ACTIVE_STATES = (State.PENDING, State.RUNNING)

    job_type = models.CharField(max_length=10, choices=JobType.choices)
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    triggered_by = models.CharField(max_length=10, choices=Trigger.choices)
    rows_archived = models.PositiveBigIntegerField(default=0)
    rows_deleted = models.PositiveBigIntegerField(default=0)
    objects_written = models.PositiveIntegerField(default=0)
    bytes_written = models.PositiveBigIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    storage_keys = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    # What the run was asked (older_than_days, batch_size, organization_id) and what it found
    # (a dry run's counts per day and bytes estimate; an erasure's counts).
    options = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = (
            # Two runs of the same archival job never run at once.
            models.UniqueConstraint(
                fields=("job_type",),
                condition=models.Q(
                    state__in=("pending", "running"), job_type__in=("messages", "media")
                ),
                name="archive_run_one_active_per_job",
            ),
        )

    def __str__(self) -> str:
        return f"{self.job_type} run {self.pk} ({self.state})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class ArchiveBatch(models.Model):
    """One archive object of rows, recorded before its upload and confirmed with its delete.

    `uploading` is written (and committed) before the object is; the rows are deleted in the
    transaction that moves it to `stored`. A batch found `uploading` belongs to a run that died
    in between: its object, if any, is removed and its rows, still in the database, are archived
    again under the same key.
    """

    class Kind(models.TextChoices):
        MESSAGES = "messages"
        WEBHOOK_EVENTS = "webhook_events", "Webhook events"
        CAMPAIGN_AUDIENCE = "campaign_audience", "Campaign audience"

    class State(models.TextChoices):
        UPLOADING = "uploading"
        STORED = "stored"
        RESTORED = "restored"

    run = models.ForeignKey(ArchiveRun, on_delete=models.PROTECT, related_name="batches")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    day = models.DateField()
    number = models.PositiveIntegerField()
    key = models.CharField(max_length=500, unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.UPLOADING)
    row_count = models.PositiveIntegerField(default=0)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    first_id = models.BigIntegerField(null=True, blank=True)
    last_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("kind", "day", "number")
        constraints = (
            models.UniqueConstraint(
                fields=("kind", "day", "number"), name="archive_batch_unique_number"
            ),
        )
        indexes = (
            # Each run first looks for batches a dead run left uploading.
            models.Index(
                fields=("state",),
                condition=~models.Q(state="stored"),
                name="archive_batch_unsettled_idx",
            ),
        )
        verbose_name_plural = "archive batches"

    def __str__(self) -> str:
        return self.key


class ArchivedContact(models.Model):
    """A contact whose rows an archive batch holds: erasure rewrites exactly those objects."""

    # No database constraint: PostgreSQL would check it for each of the thousands of rows a
    # batch records. These rows are written only in the transaction that marks their batch
    # stored, and a batch is deleted only while uploading (before it has any) or by the ORM,
    # which still cascades.
    batch = models.ForeignKey(
        ArchiveBatch, on_delete=models.CASCADE, related_name="contacts", db_constraint=False
    )
    contact_id = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return f"contact {self.contact_id} in {self.batch_id}"
