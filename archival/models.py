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
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.job_type} run {self.pk} ({self.state})"
