"""Group commit of webhook events: one INSERT and one commit for every delivery waiting.

A request thread queues its verified event. If no commit is running in its process, it becomes
the leader: it takes everything waiting, stores it with ONE multi-row
`INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key` in autocommit on the
process's writer connection, and answers each request of the batch with its outcome: the new
event's id, or None for a redelivery. Requests that arrive meanwhile wait; the leader hands the
lead to the first of them, whose batch is everything that gathered during that commit. So a lone
delivery is written at once, a busy process commits many rows at a time, and no thread hop
stands between a request and its commit. A request is answered only once its row is committed.

PostgreSQL only. The writer connection is the process's own, used by one leader at a time: a
request thread never waits on a connection check, and a connection that failed is closed and
opened again for the next batch (its requests get the error, answered 503, and the provider
retries).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    DataError,
    IntegrityError,
    OperationalError,
    connection,
    connections,
)
from django.db.backends.base.base import BaseDatabaseWrapper

from webhooks.dispatch import dispatcher
from webhooks.models import WebhookEvent
from whatsapp_platform.monitoring.logs import correlation_id

logger = logging.getLogger(__name__)

MAX_BATCH = 500
WAIT_SECONDS = 20.0  # a request gives up (503) if its batch takes longer than this
IDLE_SECONDS = 2.0  # an idle writer holds no database connection
APPLICATION_NAME = "webhook-event-writer"

_COLUMNS = (
    "provider",
    "organization_id",
    "channel_id",
    "body",
    "kind",
    "dedupe_key",
    "signature",
    "state",
    "attempts",
    "last_error",
)
_ROW_SQL = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ", now(), now(), now())"
_INSERT_SQL = (
    "INSERT INTO {table} ({columns}, received_at, queued_at, updated_at) VALUES {rows}"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
)


@dataclass(frozen=True, slots=True)
class EventRow:
    """A verified delivery, as it is stored."""

    provider: str
    organization_id: int | None
    channel_id: int | None
    body: str
    kind: str
    dedupe_key: str
    signature: str

    def params(self) -> tuple[str | int | None, ...]:
        # `queued` at once: the dispatcher marks it `received` again if the broker refuses it,
        # and the sweep of old `queued` events covers a process that died before sending.
        return (
            self.provider,
            self.organization_id,
            self.channel_id,
            self.body,
            self.kind,
            self.dedupe_key,
            self.signature,
            WebhookEvent.State.QUEUED,
            0,
            "",
        )


class _Waiter:
    """One request waiting for its row's outcome, or for the lead (a bare lock: the cheapest
    wake-up)."""

    __slots__ = ("_done", "answered", "correlation_id", "error", "event_id", "leads", "row")

    def __init__(self, row: EventRow) -> None:
        self.row = row
        # Made in the request's thread: the request's id follows the event into its task.
        self.correlation_id = correlation_id.get()
        self._done = threading.Lock()
        self._done.acquire()  # released once answered, or handed the lead
        self.answered = False
        self.leads = False
        self.event_id: int | None = None
        self.error: DatabaseError | None = None

    def answer(self, event_id: int | None = None, error: DatabaseError | None = None) -> None:
        if not self.answered:  # only the leader of its batch answers
            self.answered = True
            self.event_id, self.error = event_id, error
            self._done.release()

    def lead(self) -> None:
        self.leads = True
        self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=timeout)


@functools.cache
def _insert_sql(row_count: int) -> str:
    ops = connection.ops
    return _INSERT_SQL.format(
        table=ops.quote_name(WebhookEvent._meta.db_table),
        columns=", ".join(ops.quote_name(column) for column in _COLUMNS),
        rows=", ".join([_ROW_SQL] * row_count),
    )


def _insert(db: BaseDatabaseWrapper, rows: list[EventRow]) -> dict[str, int]:
    """Insert rows with distinct keys in one statement and commit; their new ids by key."""
    params = [value for row in rows for value in row.params()]
    new_connection = db.connection is None
    with db.cursor() as cursor:
        if new_connection:
            # Named, so that operators (and tests) can tell the writers' connections apart.
            cursor.execute("SET application_name = %s", [APPLICATION_NAME])
        cursor.execute(_insert_sql(len(rows)), params)
        return {key: event_id for event_id, key in cursor.fetchall()}


def _close(db: BaseDatabaseWrapper) -> None:
    try:
        db.close()
    except Exception:
        logger.warning("Closing the webhook event writer's database connection failed")


class EventWriter:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child (a gunicorn worker) starts with nothing waiting and no connection: the
        # parent's, if any, stays the parent's.
        self._lock = threading.Lock()  # guards what follows
        self._waiting: list[_Waiter] = []
        self._committing = False  # a leader holds the connection
        self._db: BaseDatabaseWrapper | None = None
        self._last_commit = 0.0
        self._closer_started = False

    @staticmethod
    def usable() -> bool:
        """Whether an event recorded now can go through the writer.

        PostgreSQL only, and not inside a caller's transaction: the writer's own connection
        could neither see nor join it.
        """
        return connection.vendor == "postgresql" and not connection.in_atomic_block

    def waiting(self) -> int:
        """Deliveries waiting for a commit to take them."""
        with self._lock:
            return len(self._waiting)

    def write(self, row: EventRow) -> int | None:
        """Store a row, committed on return: its new id, or None when its key is stored already.

        Raises DatabaseError when it could not be stored.
        """
        waiter = _Waiter(row)
        with self._lock:
            self._waiting.append(waiter)
            leads = not self._committing
            self._committing = True
            if not self._closer_started:
                self._closer_started = True
                threading.Thread(
                    target=self._close_when_idle, name="event-writer-closer", daemon=True
                ).start()
        if not leads and not waiter.wait(WAIT_SECONDS):
            with self._lock:
                if not waiter.leads and not waiter.answered:
                    if waiter in self._waiting:  # (else its batch is being committed)
                        self._waiting.remove(waiter)
                    raise OperationalError("The webhook event writer did not answer in time.")
        if waiter.leads or leads:
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.event_id

    def _lead(self) -> None:
        """Commit everything waiting (the leader's own row first), then hand the lead on."""
        # Let this process's other running requests join the batch first: one commit for them
        # all costs the database less than one each.
        time.sleep(0)
        with self._lock:
            batch = self._waiting[:MAX_BATCH]
            del self._waiting[:MAX_BATCH]
        try:
            self._write(batch)
        except Exception as exc:  # never leave a request waiting
            logger.exception("The webhook event writer failed")
            for waiter in batch:
                waiter.answer(error=_database_error(exc))
        finally:
            with self._lock:
                self._last_commit = time.monotonic()
                if self._waiting:
                    self._waiting[0].lead()
                else:
                    self._committing = False

    def _connection(self) -> BaseDatabaseWrapper:
        if self._db is None:
            # Not the thread's own `connection`: each leader is another request thread.
            self._db = connections.create_connection(DEFAULT_DB_ALIAS)
            self._db.inc_thread_sharing()
        return self._db

    def _close_when_idle(self) -> None:
        while True:
            time.sleep(IDLE_SECONDS)
            with self._lock:
                idle = time.monotonic() - self._last_commit >= IDLE_SECONDS
                if self._db is not None and not self._committing and idle:
                    _close(self._db)

    def _write(self, batch: list[_Waiter]) -> None:
        db = self._connection()
        first: dict[str, _Waiter] = {}
        for waiter in batch:
            first.setdefault(waiter.row.dedupe_key, waiter)
        rows = [waiter.row for waiter in first.values()]
        inserted: dict[str, int] = {}
        failed: dict[str, DatabaseError] = {}
        try:
            inserted = _insert(db, rows)
        except (DataError, IntegrityError, ValueError) as exc:
            # A row the database refuses must not fail the others: store them one by one.
            for row in rows if len(rows) > 1 else ():
                try:
                    inserted.update(_insert(db, [row]))
                except (DataError, IntegrityError, ValueError) as row_exc:
                    failed[row.dedupe_key] = _database_error(row_exc)
            if len(rows) == 1:
                failed[rows[0].dedupe_key] = _database_error(exc)
        except Exception as exc:
            failed = dict.fromkeys(first, _database_error(exc))
            _close(db)  # the next batch opens a new one
        if failed:
            # Types only: database errors can quote what a row holds.
            errors = sorted({type(error.__cause__ or error).__name__ for error in failed.values()})
            logger.error(
                "Storing %s of %s webhook event(s) failed: %s", len(failed), len(rows), errors
            )
        # Handed over before the answers: once a request is answered, its event is on its way.
        dispatcher.submit_many(
            list(inserted.values()), [first[key].correlation_id for key in inserted]
        )
        for waiter in batch:
            key = waiter.row.dedupe_key
            if key in failed:
                waiter.answer(error=failed[key])
            else:
                waiter.answer(event_id=inserted.get(key) if first[key] is waiter else None)


def _database_error(exc: BaseException) -> DatabaseError:
    """What the request raises (answered 503): a DatabaseError, whatever the writer met."""
    if isinstance(exc, DatabaseError):
        return exc
    error = OperationalError(f"Storing the webhook event failed: {type(exc).__name__}")
    error.__cause__ = exc
    return error


event_writer = EventWriter()
