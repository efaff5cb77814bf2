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

from whatsapp_platform.monitoring.logs import correlation_id, correlation_ids_join

logger = logging.getLogger(__name__)

DISPATCH_BATCH = 200
LINGER_SECONDS = 0.2  # how long a batch waits for company: fewer, fuller publishes


class EventDispatcher:
    def __init__(self) -> None:
        # Each commit's events: (event id, the correlation id of the request that stored it)
        self._queue: queue.SimpleQueue[list[tuple[int, str]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, event_id: int) -> None:
        self.submit_many([event_id])

    def submit_many(self, event_ids: list[int], correlation_ids: list[str] | None = None) -> None:
        """Hand over committed events, with the correlation ids of the requests that stored them
        (by default the current one)."""
        if not event_ids:
            return
        if self._pid != os.getpid():  # first use, or a forked child: start this process's thread
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    threading.Thread(target=self._run, name="event-dispatcher", daemon=True).start()
                    self._pid = os.getpid()
        self._idle.clear()
        requests = correlation_ids or [correlation_id.get()] * len(event_ids)
        self._queue.put(list(zip(event_ids, requests, strict=True)))

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until everything submitted has been handled (for tests and shutdown)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            items = self._queue.get()
            # Let a batch gather, then take it all at once: one wake-up a batch, not one an event.
            time.sleep(LINGER_SECONDS)
            while True:
                try:
                    items += self._queue.get_nowait()
                except queue.Empty:
                    break
            for start in range(0, len(items), DISPATCH_BATCH):
                self._send(items[start : start + DISPATCH_BATCH])
            if self._queue.empty():
                connection.close()  # idle: hold no database connection
                self._idle.set()

    @staticmethod
    def _send(items: list[tuple[int, str]]) -> None:
        from webhooks.services import webhook_events_send

        ids = [event_id for event_id, _ in items]
        # The batch's task carries the correlation ids of all its requests.
        token = correlation_id.set(correlation_ids_join(cid for _, cid in items))
        try:
            close_old_connections()
            webhook_events_send(event_ids=ids)
        except Exception:
            logger.exception("Dispatching %s webhook event(s) failed", len(ids))
        finally:
            correlation_id.reset(token)


dispatcher = EventDispatcher()
