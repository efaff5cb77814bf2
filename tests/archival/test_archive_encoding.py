"""What an archive object holds, line by line, and how storage confirms an object it wrote."""

from __future__ import annotations

from datetime import datetime
from io import BytesIO, StringIO
from typing import Any

import pytest
from django.core.management import call_command

from archival.models import ArchiveBatch
from conversations.models import Message
from tests.archival.conftest import old_messages, read_archive
from whatsapp_platform.lib.storage import ArchiveStorage, StoredObject

pytestmark = pytest.mark.django_db


def test_archived_lines_keep_json_nulls_text_and_timestamps_exactly(
    storage: ArchiveStorage, org_channel: Any
) -> None:
    content = {"text": {"body": "¿Llegó? 🚚"}, "context": None, "items": [None, {"x": None}]}
    billing = {"pricing": {"billable": True, "category": None}}
    (message,) = old_messages(org_channel, 1, days=100, content=content, billing=billing)
    message.refresh_from_db()

    call_command("archive_messages", stdout=StringIO())

    (line,) = [line for line in read_archive(storage) if line["table"] == "conversations_message"]
    row = line["row"]
    assert row["content"] == content
    assert row["billing"] == billing
    assert datetime.fromisoformat(row["created_at"]) == message.created_at
    # Empty columns are left out of the line, not written as null.
    assert "reply_to_id" not in row
    assert not Message.objects.filter(id=message.id).exists()

    call_command(
        "restore_messages", "--from", "2000-01-01", "--to", "2100-01-01", stdout=StringIO()
    )

    restored = Message.objects.get(id=message.id)
    assert (restored.content, restored.billing) == (content, billing)
    assert restored.created_at == message.created_at


def test_storage_confirms_only_the_object_it_wrote(storage: ArchiveStorage) -> None:
    key = "archived-messages/confirm/object.json.gz"
    sent = storage.put_stream(key, BytesIO(b"written bytes"))

    assert sent.size == len(b"written bytes")
    assert storage.confirm(sent)
    assert not storage.confirm(StoredObject(key, sent.size + 1, sent.sha256, sent.md5))
    assert not storage.confirm(StoredObject("archived-messages/confirm/absent", 1, "", ""))

    # Replaced by other bytes of the same size: S3's ETag no longer matches and the re-read
    # hash does not either.
    storage.put_stream(key, BytesIO(b"WRITTEN BYTES"))
    if type(storage).__name__ == "S3Storage":
        assert not storage.confirm(sent)


def test_every_archived_batch_records_the_size_and_hash_of_its_stored_object(
    storage: ArchiveStorage, org_channel: Any
) -> None:
    old_messages(org_channel, 6, days=100)

    call_command("archive_messages", "--batch-size", "2", stdout=StringIO())

    batches = list(ArchiveBatch.objects.filter(kind="messages"))
    assert len(batches) == 4  # three a day over two days, two a batch
    for batch in batches:
        stored = storage.stat(batch.key)
        assert stored is not None
        assert (batch.state, stored.size, stored.sha256) == ("stored", batch.size, batch.sha256)
