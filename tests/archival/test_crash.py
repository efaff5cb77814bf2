"""A run killed between an upload and the delete of its rows, then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from archival.models import ArchiveBatch, ArchiveRun
from conversations.models import Message
from tests.archival.conftest import messages_job_free, old_messages, read_archive
from tests.conftest import ROOT, _database_url, wait_for
from whatsapp_platform.lib.storage import ArchiveStorage

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_killed_after_an_upload_leaves_one_copy_and_loses_nothing(
    storage: ArchiveStorage, org_channel: Any, tmp_path: Any
) -> None:
    messages = old_messages(org_channel, 7, days=100)
    ids = sorted(m.id for m in messages)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "ARCHIVE_PAUSE_AFTER_UPLOADS": "2",
        "ARCHIVE_S3_BUCKET": settings.ARCHIVE_S3_BUCKET,
        "S3_ENDPOINT_URL": settings.S3_ENDPOINT_URL or "",
        "ARCHIVE_LOCAL_DIR": str(settings.ARCHIVE_LOCAL_DIR),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "archive_messages", "--batch-size", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        while line and "ARCHIVE_PAUSED" not in line:
            line = process.stdout.readline()
        assert "ARCHIVE_PAUSED" in line
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    # Killed with its second object uploaded (the third may be on its way) and their rows
    # still here.
    paused_key = line.split()[-1]
    uploading = ArchiveBatch.objects.filter(state="uploading")
    assert paused_key in {batch.key for batch in uploading}
    assert storage.size(paused_key) is not None
    assert ArchiveBatch.objects.filter(state="stored").count() == 1
    assert Message.objects.filter(id__in=ids).count() == 5
    wait_for(messages_job_free, timeout=30)

    call_command("archive_messages", "--batch-size", "2", stdout=StringIO())

    assert not Message.objects.filter(id__in=ids).exists()
    assert set(ArchiveBatch.objects.values_list("state", flat=True)) == {"stored"}
    assert sorted(storage.keys("archived-messages/")) == sorted(
        ArchiveBatch.objects.values_list("key", flat=True)
    )
    archived = Counter(
        line["row"]["id"]
        for line in read_archive(storage)
        if line["table"] == "conversations_message"
    )
    assert sorted(archived) == ids
    assert set(archived.values()) == {1}
    # The dead run is on record as interrupted; the rerun finished the work.
    assert list(ArchiveRun.objects.order_by("id").values_list("state", flat=True)) == [
        "failed",
        "succeeded",
    ]
