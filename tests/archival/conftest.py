"""Fixtures of the archival tests: archive storage on S3 (moto) or a local folder, old rows,
staff and non-staff callers, and helpers that read archive objects back."""

from __future__ import annotations

import gzip
import importlib
import json
from datetime import timedelta
from typing import Any

import boto3
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from conversations.models import Message
from tests.factories import ChannelFactory, ContactFactory, MessageFactory
from whatsapp_platform.lib.storage import ArchiveStorage, archive_storage
from whatsapp_platform.models import Channel, Organization


def empty_bucket(endpoint: str, bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=settings.AWS_REGION)
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        for item in items:
            s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])


@pytest.fixture(params=["local", "s3"])
def storage(request: Any, settings: Any, tmp_path: Any) -> ArchiveStorage:
    """Archive storage, once on the local folder backend and once on S3 (moto server)."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("aws_endpoint")
        settings.ARCHIVE_S3_BUCKET = "test-archive"
        settings.S3_ENDPOINT_URL = endpoint
        empty_bucket(endpoint, "test-archive")
    else:
        settings.ARCHIVE_S3_BUCKET = ""
        settings.ARCHIVE_LOCAL_DIR = tmp_path / "archive"
    return archive_storage()


@pytest.fixture
def local_storage(settings: Any, tmp_path: Any) -> ArchiveStorage:
    settings.ARCHIVE_S3_BUCKET = ""
    settings.ARCHIVE_LOCAL_DIR = tmp_path / "archive"
    return archive_storage()


def read_archive(
    storage: ArchiveStorage, prefix: str = "archived-messages/"
) -> list[dict[str, Any]]:
    """Every line of every archive object under the prefix."""
    lines = []
    for key in storage.keys(prefix):
        with storage.open(key) as raw:
            data = gzip.decompress(raw.read())
        lines += [json.loads(line) for line in data.splitlines() if line.strip()]
    return lines


def messages_job_free() -> bool:
    """No process holds the messages job: a run's task has returned, not just recorded."""
    from archival.models import ArchiveRun
    from archival.services import job_lock

    with job_lock(ArchiveRun.JobType.MESSAGES) as taken:
        return taken


def make_old(queryset: Any, days: int, field: str = "created_at") -> None:
    queryset.update(**{field: timezone.now() - timedelta(days=days)})


def old_messages(channel: Channel, count: int, days: int, **kwargs: Any) -> list[Any]:
    messages = [MessageFactory(channel=channel, **kwargs) for _ in range(count)]
    for i, message in enumerate(messages):
        # Spread over two days, so that batches split by day.
        Message.objects.filter(id=message.id).update(
            created_at=timezone.now() - timedelta(days=days + (i % 2), minutes=i)
        )
    return messages


@pytest.fixture
def org_channel(organization: Organization) -> Channel:
    return ChannelFactory(organization=organization)


@pytest.fixture
def contact_factory() -> Any:
    return ContactFactory


@pytest.fixture
def staff_client(client: Client) -> Client:
    # Archival spans organizations: its staff API is the superusers'.
    user = get_user_model().objects.create_superuser("ops", "ops@example.test", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def periodic_tasks() -> None:
    """The periodic tasks the data migration creates (made again after a flushing test)."""
    if not PeriodicTask.objects.filter(name__startswith="archive-").exists():
        migration = importlib.import_module("archival.migrations.0003_periodic_tasks")
        migration.create_periodic_tasks(apps, None)
