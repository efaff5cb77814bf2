"""A message archived while another transaction links a row to it."""

from __future__ import annotations

import threading
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from conversations.models import Message
from conversations.selectors import message_ids_locked_for_link
from tests.archival.conftest import messages_job_free, old_messages
from tests.conftest import wait_for
from tests.factories import MessageFactory
from whatsapp_platform.lib.storage import ArchiveStorage

pytestmark = pytest.mark.django_db(transaction=True)


def _archival_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'DELETE FROM \"conversations_message\"%%'"
        )
        return bool(cursor.fetchone()[0])


def test_a_reply_linked_while_its_message_is_archived_is_unlinked_not_left_dangling(
    local_storage: ArchiveStorage, org_channel: Any
) -> None:
    (quoted,) = old_messages(org_channel, 1, days=100)
    linked = threading.Event()
    release = threading.Event()
    reply_ids: list[int] = []

    def link_a_reply() -> None:
        try:
            with transaction.atomic():
                assert message_ids_locked_for_link(ids=[quoted.id]) == {quoted.id}
                reply = MessageFactory(channel=org_channel, contact=quoted.contact)
                Message.objects.filter(id=reply.id).update(reply_to_id=quoted.id)
                reply_ids.append(reply.id)
                linked.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    linker = threading.Thread(target=link_a_reply)
    linker.start()
    assert linked.wait(timeout=30)

    def archive() -> None:
        try:
            call_command("archive_messages", stdout=StringIO())
        finally:
            connection.close()

    archiver = threading.Thread(target=archive)
    archiver.start()
    try:
        # The archival delete waits for the linking transaction to commit.
        wait_for(_archival_waits_on_a_lock, timeout=30)
    finally:
        release.set()
        linker.join(timeout=30)
        archiver.join(timeout=60)
    wait_for(messages_job_free, timeout=30)

    assert not Message.objects.filter(id=quoted.id).exists()
    (reply_id,) = reply_ids
    assert Message.objects.get(id=reply_id).reply_to_id is None


def test_a_message_archived_before_the_link_is_not_offered_for_linking(
    local_storage: ArchiveStorage, org_channel: Any
) -> None:
    (quoted,) = old_messages(org_channel, 1, days=100)
    call_command("archive_messages", stdout=StringIO())

    with transaction.atomic():
        assert message_ids_locked_for_link(ids=[quoted.id]) == set()
