"""Group commit of webhook events: one INSERT and one commit for every delivery waiting.

Request threads hand their verified event to this process's writer thread and wait. The writer
takes everything waiting, stores it with ONE multi-row
`INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key` in autocommit, then
wakes each request with its outcome: the new event's id, or None for a redelivery. A request is
answered only once its row is committed. A batch is whatever gathered while the previous commit
ran, so a lone delivery is written at once and a busy process commits many rows at a time.

PostgreSQL only. The writer owns its database connection: a request thread never waits on a
connection check, and a connection that failed is closed and opened again for the next batch
(its requests get the error, answered 503, and the provider retries).
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from dataclasses import dataclass

from django.db import DatabaseError, DataError, IntegrityError, OperationalError, connection

from webhooks.dispatch import dispatcher
from webhooks.models import WebhookEvent
from whatsapp_platform.monitoring.logs import correlation_id

logger = logging.getLogger(__name__)

MAX_BATCH = 500
# One writer a process: a second one, committing while the first does, measured slower here
# (smaller batches, more thread wake-ups); more can run side by side, each with its connection.
WRITER_THREADS = 1
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
    """One request waiting for its row's outcome (a bare lock: the cheapest wake-up)."""

    __slots__ = ("_done", "answered", "correlation_id", "error", "event_id", "row")

    def __init__(self, row: EventRow) -> None:
        self.row = row
        # Made in the request's thread: the request's id follows the event into its task.
        self.correlation_id = correlation_id.get()
        self._done = threading.Lock()
        self._done.acquire()  # released once answered
        self.answered = False
        self.event_id: int | None = None
        self.error: DatabaseError | None = None

    def answer(self, event_id: int | None = None, error: DatabaseError | None = None) -> None:
        if not self.answered:  # only the writer thread answers
            self.answered = True
            self.event_id, self.error = event_id, error
            self._done.release()

    def wait(self, timeout: float) -> bool:
        return self._done.acquire(timeout=timeout)


@functools.cache
def _insert_sql(row_count: int) -> str:
    return _INSERT_SQL.format(
        table=connection.ops.quote_name(WebhookEvent._meta.db_table),
        columns=", ".join(connection.ops.quote_name(column) for column in _COLUMNS),
        rows=", ".join([_ROW_SQL] * row_count),
    )


def _insert(rows: list[EventRow]) -> dict[str, int]:
    """Insert rows with distinct keys in one statement and commit; their new ids by key."""
    params = [value for row in rows for value in row.params()]
    new_connection = connection.connection is None
    with connection.cursor() as cursor:
        if new_connection:
            # Named, so that operators (and tests) can tell the writers' connections apart.
            cursor.execute("SET application_name = %s", [APPLICATION_NAME])
        cursor.execute(_insert_sql(len(rows)), params)
        return {key: event_id for event_id, key in cursor.fetchall()}


def _close_connection() -> None:
    try:
        connection.close()
    except Exception:
        logger.warning("Closing the webhook event writer's database connection failed")


class EventWriter:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child (a gunicorn worker) starts with no writer thread and nothing waiting.
        self._waiting: queue.SimpleQueue[_Waiter] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._started = False

    @staticmethod
    def usable() -> bool:
        """Whether an event recorded now can go through the writer.

        PostgreSQL only, and not inside a caller's transaction: the writer's own connection
        could neither see nor join it.
        """
        return connection.vendor == "postgresql" and not connection.in_atomic_block

    def waiting(self) -> int:
        """Deliveries waiting for a writer to take them."""
        return self._waiting.qsize()

    def write(self, row: EventRow) -> int | None:
        """Store a row, committed on return: its new id, or None when its key is stored already.

        Raises DatabaseError when it could not be stored.
        """
        if not self._started:
            with self._start_lock:
                if not self._started:
                    for _ in range(WRITER_THREADS):
                        threading.Thread(
                            target=self._run,
                            args=(self._waiting,),
                            name="event-writer",
                            daemon=True,
                        ).start()
                    self._started = True
        waiter = _Waiter(row)
        self._waiting.put(waiter)
        if not waiter.wait(WAIT_SECONDS):
            raise OperationalError("The webhook event writer did not answer in time.")
        if waiter.error is not None:
            raise waiter.error
        return waiter.event_id

    def _run(self, waiting: queue.SimpleQueue[_Waiter]) -> None:
        while True:
            try:
                batch = [waiting.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                _close_connection()
                batch = [waiting.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as exc:  # never leave a request waiting, nor the writer dead
                logger.exception("The webhook event writer failed")
                for waiter in batch:
                    waiter.answer(error=_database_error(exc))

    def _write(self, batch: list[_Waiter]) -> None:
        first: dict[str, _Waiter] = {}
        for waiter in batch:
            first.setdefault(waiter.row.dedupe_key, waiter)
        rows = [waiter.row for waiter in first.values()]
        inserted: dict[str, int] = {}
        failed: dict[str, DatabaseError] = {}
        try:
            inserted = _insert(rows)
        except (DataError, IntegrityError, ValueError) as exc:
            # A row the database refuses must not fail the others: store them one by one.
            for row in rows if len(rows) > 1 else ():
                try:
                    inserted.update(_insert([row]))
                except (DataError, IntegrityError, ValueError) as row_exc:
                    failed[row.dedupe_key] = _database_error(row_exc)
            if len(rows) == 1:
                failed[rows[0].dedupe_key] = _database_error(exc)
        except Exception as exc:
            failed = dict.fromkeys(first, _database_error(exc))
            _close_connection()  # the next batch opens a new one
        if failed:
            # Types only: database errors can quote what a row holds.
            errors = sorted({type(error.__cause__ or error).__name__ for error in failed.values()})
            logger.error(
                "Storing %s of %s webhook event(s) failed: %s", len(failed), len(rows), errors
            )
        for waiter in batch:
            key = waiter.row.dedupe_key
            if key in failed:
                waiter.answer(error=failed[key])
            else:
                waiter.answer(event_id=inserted.get(key) if first[key] is waiter else None)
        dispatcher.submit_many(
            list(inserted.values()), [first[key].correlation_id for key in inserted]
        )


def _database_error(exc: BaseException) -> DatabaseError:
    """What the request raises (answered 503): a DatabaseError, whatever the writer met."""
    if isinstance(exc, DatabaseError):
        return exc
    error = OperationalError(f"Storing the webhook event failed: {type(exc).__name__}")
    error.__cause__ = exc
    return error


event_writer = EventWriter()
