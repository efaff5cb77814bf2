"""Deliveries arriving together are committed together: each stored once, none lost."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test import Client

from conversations.models import Message
from tests.conftest import wait_for
from tests.factories import ChannelFactory, MessageFactory, OrganizationFactory
from tests.webhooks.conftest import (
    META_APP_SECRET,
    SECOND_PHONE_NUMBER_ID,
    meta_wire,
    payload,
    post_meta,
)
from webhooks.models import WebhookEvent
from webhooks.services import dedupe_key
from webhooks.writer import APPLICATION_NAME, event_writer
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db(transaction=True)

GONE_WABA_ID = "102290129340999"


def status_body(wamid: str, phone_number_id: str | None = None) -> bytes:
    body = payload("meta/status_read.json")
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"][0].update(id=wamid, status="delivered")
    if phone_number_id:  # another tenant's number, in its own WABA
        value["metadata"]["phone_number_id"] = phone_number_id
        body["entry"][0]["id"] = GONE_WABA_ID
    return meta_wire(body)


def post_from_thread(body: bytes, secret: str = META_APP_SECRET) -> int:
    """One delivery through the real view, from a thread of its own (own DB connection)."""
    try:
        return int(post_meta(Client(), body, secret=secret).status_code)
    finally:
        connection.close()


class BusyWriters:
    """Every writer busy: each waits on the row lock of a key that another transaction inserted.

    Deliveries posted meanwhile wait together; `release()` rolls that transaction back.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.blocker = connections.create_connection("default")
        self.held: list[Future[int]] = []

    def hold(self) -> None:
        held = status_body("wamid.HELD")
        self.blocker.set_autocommit(False)
        with self.blocker.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhooks_webhookevent (provider, body, kind, dedupe_key, signature,"
                " state, attempts, last_error, received_at, updated_at)"
                " VALUES ('meta', '', 'statuses', %s, '', 'ignored', 0, '', now(), now())",
                [dedupe_key("meta", held)],
            )
        # The process's one commit in flight, held until `release()`.
        self.held.append(self.pool.submit(post_from_thread, held))
        wait_for(lambda: self.writers_waiting_on_a_lock() == 1)

    @staticmethod
    def writers_waiting_on_a_lock() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                " AND datname = current_database() AND wait_event_type = 'Lock'",
                [APPLICATION_NAME],
            )
            return int(cursor.fetchone()[0])

    def post(self, bodies: list[bytes], secret: str = META_APP_SECRET) -> list[Future[int]]:
        """Post from threads; returns once every delivery waits for a writer."""
        before = event_writer.waiting()
        answers = [self.pool.submit(post_from_thread, body, secret) for body in bodies]
        wait_for(lambda: event_writer.waiting() == before + len(bodies))
        return answers

    def release(self) -> None:
        self.blocker.rollback()

    def close(self) -> None:
        self.blocker.close()  # (rolls back, if a test failed before its release)
        self.pool.shutdown()
        # The held body is stored once the blocking transaction rolls back.
        assert [answer.result() for answer in self.held] == [200] * len(self.held)


@pytest.fixture
def busy_writers(meta_acme: Channel) -> Iterator[BusyWriters]:
    writers = BusyWriters()
    yield writers
    writers.close()


def test_many_concurrent_deliveries_are_each_stored_once_and_applied(
    meta_acme: Channel, celery_worker: Any
) -> None:
    messages = [
        MessageFactory(channel=meta_acme, provider_message_id=f"wamid.MANY{n:04d}", status="sent")
        for n in range(120)
    ]
    bodies = [status_body(m.provider_message_id) for m in messages]

    # Every body twice, as a provider redelivering at once; sixteen requests at a time.
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(post_from_thread, bodies + bodies))

    assert answers == [200] * len(answers)
    assert WebhookEvent.objects.count() == len(bodies)
    wait_for(lambda: not Message.objects.filter(status="sent").exists())
    assert set(Message.objects.values_list("status", flat=True)) == {"delivered"}
    wait_for(lambda: set(WebhookEvent.objects.values_list("state", flat=True)) == {"processed"})


def test_deliveries_waiting_together_are_committed_in_one_transaction(
    busy_writers: BusyWriters,
) -> None:
    bodies = [status_body(f"wamid.TOGETHER{n:02d}") for n in range(10)]
    busy_writers.hold()
    # Each body twice: the copy in the same commit is answered as a redelivery.
    answers = busy_writers.post(bodies + bodies)

    busy_writers.release()

    assert [answer.result(timeout=30) for answer in answers] == [200] * len(answers)
    stored = WebhookEvent.objects.filter(body__contains="TOGETHER")
    assert stored.count() == len(bodies)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT xmin::text) FROM webhooks_webhookevent WHERE id = ANY(%s)",
            [list(stored.values_list("id", flat=True))],
        )
        assert cursor.fetchone()[0] == 1


def test_another_tenants_refused_row_does_not_fail_this_tenants_deliveries(
    busy_writers: BusyWriters,
) -> None:
    gone = ChannelFactory(
        organization=OrganizationFactory(name="Gone"),
        phone_number_id=SECOND_PHONE_NUMBER_ID,
        waba_id=GONE_WABA_ID,
        app_secret="gone-app-secret",
    )
    assert (
        post_from_thread(status_body("wamid.GONE0", SECOND_PHONE_NUMBER_ID), "gone-app-secret")
        == 200
    )
    # Another process removes that tenant: this process still has its channel cached.
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM webhooks_webhookevent WHERE organization_id = %s", [gone.organization_id]
        )
        cursor.execute("DELETE FROM whatsapp_platform_channel WHERE id = %s", [gone.id])
        cursor.execute(
            "DELETE FROM whatsapp_platform_organization WHERE id = %s", [gone.organization_id]
        )
    busy_writers.hold()
    good = busy_writers.post([status_body(f"wamid.GOOD{n}") for n in range(3)])
    refused = busy_writers.post(
        [status_body("wamid.GONE1", SECOND_PHONE_NUMBER_ID)], "gone-app-secret"
    )

    busy_writers.release()

    assert [answer.result(timeout=30) for answer in good] == [200, 200, 200]
    assert refused[0].result(timeout=30) == 503
    assert WebhookEvent.objects.filter(body__contains="wamid.GOOD").count() == 3
    assert not WebhookEvent.objects.filter(body__contains="wamid.GONE1").exists()


def test_an_unreachable_database_answers_503_and_the_redelivery_is_stored(
    meta_acme: Channel,
) -> None:
    assert post_meta(Client(), status_body("wamid.BEFORE")).status_code == 200
    body = status_body("wamid.DURING")
    saved_port = connection.settings_dict["PORT"]
    with connection.cursor() as cursor:
        connection.settings_dict["PORT"] = "1"  # no writer can connect again
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
    try:
        during = post_meta(Client(), body)
    finally:
        connection.settings_dict["PORT"] = saved_port

    assert during.status_code == 503
    assert during["Retry-After"]
    assert during.json()["error"] == "Temporarily unavailable."
    # The writer whose connection ended found out on that batch: the next one connects again.
    assert post_meta(Client(), body).status_code == 200
    assert WebhookEvent.objects.filter(body__contains="wamid.DURING").count() == 1


def test_inside_a_callers_transaction_the_delivery_is_stored_with_it(meta_acme: Channel) -> None:
    with transaction.atomic():
        assert post_meta(Client(), status_body("wamid.INSIDE")).status_code == 200
        assert WebhookEvent.objects.filter(body__contains="wamid.INSIDE").exists()
        transaction.set_rollback(True)

    assert not WebhookEvent.objects.exists()
