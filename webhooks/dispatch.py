"""Sends stored webhook events to the `incoming` queue from a background thread, in batches.

The request that stored an event hands its id over and answers at once: it never waits on the
broker. One SQS message carries up to DISPATCH_BATCH ids. Nothing is lost here: events the broker
refuses are marked `received` and sent by the sweeper within a minute, and those of a process
that died before sending are still `queued`, which the sweeper sends after a longer while.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)

DISPATCH_BATCH = 200
LINGER_SECONDS = 0.2  # how long a batch waits for company: fewer, fuller publishes


class EventDispatcher:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, event_id: int) -> None:
        self.submit_many([event_id])

    def submit_many(self, event_ids: list[int]) -> None:
        if not event_ids:
            return
        if self._pid != os.getpid():  # first use, or a forked child: start this process's thread
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    threading.Thread(target=self._run, name="event-dispatcher", daemon=True).start()
                    self._pid = os.getpid()
        self._idle.clear()
        for event_id in event_ids:
            self._queue.put(event_id)

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until everything submitted has been handled (for tests and shutdown)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        from webhooks.services import webhook_events_send

        while True:
            ids = [self._queue.get()]
            deadline = time.monotonic() + LINGER_SECONDS
            while len(ids) < DISPATCH_BATCH:
                try:
                    ids.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                close_old_connections()
                webhook_events_send(event_ids=ids)
            except Exception:
                logger.exception("Dispatching %s webhook event(s) failed", len(ids))
            if self._queue.empty():
                connection.close()  # idle: hold no database connection
                self._idle.set()


dispatcher = EventDispatcher()
