"""Outbound messages: queue a send, then send it once, within the channel's and Meta's limits.

`message_queue` writes a message `queued` and enqueues its task after the commit. A send
(`message_send` for one message, `messages_send` for a campaign chunk) then, in order:

1. claims the messages with one conditional UPDATE (`queued` -> `sending`) that exactly one
   worker wins; a redelivered task finds them claimed and never calls the provider again (a
   campaign chunk's messages are written `sending` by their sender, claimed from the start);
2. checks the rules at send time, failing with a platform code (Message.SKIP_CODES): opted-out
   contacts, free-form messages outside the 24-hour window, marketing held for the contact;
3. waits (back to `queued` with `next_attempt_at` and a task countdown, never failed) for the
   channel's pacing when its next slot is far, for Meta's pair rate limit (one message per user
   every PAIR_RATE_SECONDS, Conversation.last_outbound_at) and for the messaging tier (new
   business-initiated conversations per rolling 24 hours, counted under the SendRate row lock);
4. takes the per-contact marketing frequency cap with a conditional UPDATE of
   Contact.last_marketing_at (failed `frequency_cap` when taken);
5. reserves pacing slots for the chunk in one round trip and makes the provider calls at their
   slot times, concurrently, from the process's pool of provider-call threads (they only do
   HTTP), recording `send_started_at` with one UPDATE per group of calls a few tens of
   milliseconds ahead of them; a call whose slot has passed is not made, and takes a new slot;
6. records every provider id before returning, so before the task acknowledges, in one
   statement for the calls answered together.

Provider errors: retryable ones back off exponentially with jitter, up to
MESSAGE_SEND_MAX_RETRIES, then fail with the last error; permanent ones fail with the
provider's code; credential ones also flag the channel. Meta 131056 (pair limit) waits the pair
interval; 131049 holds the contact's marketing for 24 hours and 131050 (the user stopped
marketing) holds it until the user opts back in. A call whose outcome is unknown (an unexpected
error, or a worker that died: the sweeper marks messages `sending` past the lease) is marked
`unknown` and reconciled from status webhooks, which carry our message id. The provider reports
every message it accepts with a status webhook, so an `unknown` send that no status has named
within SEND_UNKNOWN_RESEND_AFTER_SECONDS of its call was never accepted:
`messages_resend_unreported` sends it again, once, as the same row and through the same rules
and pacing (for Twilio, which sends no status while it holds a message queued, only once its
Messages resource shows no such message either).

A template is marketing when its content says so: `{"template": {..., "category": "marketing"}}`.
Messages of priority LOW are campaign traffic for the sweeper's re-sends.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from conversations import pacing
from conversations.models import Contact, Conversation, Message
from conversations.selectors import message_ids_locked_for_link
from conversations.services import messages_sent_record
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.providers.base import (
    Backend,
    OutboundMessage,
    SendResult,
    backend_for,
)
from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderError,
    ProviderRetryableError,
    SendSlotMissed,
)
from whatsapp_platform.models import Channel
from whatsapp_platform.monitoring import metrics as send_metrics
from whatsapp_platform.services import channel_flag_credential_error

logger = logging.getLogger(__name__)

Status = Message.Status

# Meta's error codes that change what the platform does next (reference: meta-cloud-api §6.4).
META_THROUGHPUT = "130429"
META_PAIR_LIMIT = "131056"
META_MARKETING_CAP = "131049"
META_MARKETING_STOPPED = "131050"

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
TIER_WINDOW = timedelta(hours=24)
MARKETING_CAP_HOLD = timedelta(hours=24)
# 131050 holds marketing until the user opts back in (Meta's marketing preference webhook, or
# START), which clears the hold.
MARKETING_STOPPED_HOLD = timedelta(days=3650)
# A send waits inside its task for at most this long for a slot; further away, it is put back.
MAX_SLOT_WAIT = 2.0
# A provider call that starts later than this after its slot would bunch up with the next
# ones: it takes a new slot instead. With the pacing's headroom, a one-second window then holds
# at most 95 % x 1.03 of the limit even when calls start this late, which leaves the rest for
# the network's jitter on the way to the provider.
LATE_AFTER = 0.03
# `send_started_at` is recorded with one UPDATE for each group of calls whose slots fall within
# MARK_GROUP, MARK_LEAD ahead of the group's first slot: a worker that dies leaves unknown the
# calls it had started and at most those due within the next MARK_LEAD + MARK_GROUP.
MARK_GROUP = 0.05
MARK_LEAD = 0.02


def message_queue(
    *,
    channel: Channel,
    contact: Contact,
    type: str,
    content: dict[str, Any],
    text: str = "",
    priority: int = Message.Priority.NORMAL,
    idempotency_key: str | None = None,
    reply_to: Message | None = None,
) -> tuple[Message, bool]:
    """Write an outbound message `queued` and enqueue its send once committed.

    Returns (message, created). With an idempotency key already used by the organization, the
    existing message is returned and nothing new is sent. Should the broker be unavailable,
    the message stays `queued` and the send sweeper enqueues it later.
    """
    if idempotency_key:
        existing = Message.objects.filter(
            organization_id=channel.organization_id, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return existing, False
    conversation, _ = Conversation.objects.get_or_create(
        channel=channel,
        contact=contact,
        defaults={"organization_id": channel.organization_id},
    )
    try:
        with transaction.atomic():
            if reply_to is not None and not message_ids_locked_for_link(ids=[reply_to.id]):
                reply_to = None  # archived in the meantime
            message = Message.objects.create(
                organization_id=channel.organization_id,
                channel=channel,
                contact=contact,
                conversation=conversation,
                direction=Message.Direction.OUTBOUND,
                provider=channel.provider,
                type=type,
                text=text,
                content=content,
                status=Status.QUEUED,
                queued_at=timezone.now(),
                priority=priority,
                idempotency_key=idempotency_key or None,
                reply_to=reply_to,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent request with the same key won.
        return Message.objects.get(
            organization_id=channel.organization_id, idempotency_key=idempotency_key
        ), False
    from conversations.tasks import send_message

    enqueue_on_commit(send_message, message.id)
    return message, True


def message_send(*, message_id: int) -> str:
    """Send one queued message; returns its status after (`queued` when it waits)."""
    return messages_send(message_ids=[message_id]).get(message_id, "")


def messages_send(
    *, message_ids: list[int], campaign: bool = False, claimed: bool = False
) -> dict[int, str]:
    """Send queued messages (a campaign chunk) at their channel's full rate.

    Returns each message's status after. Messages that must wait are back to `queued` with
    their task scheduled; campaign traffic keeps to its share of the rate while other sends
    flow. With `claimed`, the caller wrote the messages `sending` itself and they are its own
    already (a campaign chunk's new messages): no claim is needed.
    """
    statuses: dict[int, str] = {}
    ids = list(dict.fromkeys(message_ids))
    owned = ids if claimed else _claim(ids)
    if len(owned) < len(ids):
        statuses.update(
            Message.objects.filter(id__in=set(ids) - set(owned)).values_list("id", "status")
        )
    messages = list(
        Message.objects.select_related("contact", "conversation")
        .filter(id__in=owned)
        .order_by("priority", "id")
    )
    # Each channel once, not joined to every message: its credentials are decrypted once.
    channels = Channel.objects.in_bulk({message.channel_id for message in messages})
    by_channel: dict[int, list[Message]] = {}
    for message in messages:
        message.channel = channels[message.channel_id]
        by_channel.setdefault(message.channel_id, []).append(message)
    deadline = time.monotonic() + settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    for channel_messages in by_channel.values():
        _ChannelSend(channel_messages, campaign, statuses, deadline).run()
    return statuses


def _claim(message_ids: list[int]) -> list[int]:
    """Exactly one worker moves each queued message that is due to `sending`.

    `send_started_at` stays empty until the message is handed to the provider: a claimed
    message that never got that far is safe to send again.
    """
    if not message_ids:
        return []
    now = timezone.now()
    table = connection.ops.quote_name(Message._meta.db_table)
    marks = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, send_started_at = NULL, updated_at = %s "  # noqa: S608
            f"WHERE id IN ({marks}) AND status = %s AND direction = %s "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= %s) RETURNING id",
            [
                Status.SENDING,
                now,
                *message_ids,
                Status.QUEUED,
                Message.Direction.OUTBOUND,
                now,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


def _update_returning_ids(
    model: Any, *, ids: Iterable[int], assign: str, where: str, params: list[Any]
) -> set[int]:
    """`UPDATE ... SET <assign> WHERE id IN (ids) AND <where> RETURNING id`: the rows won."""
    ids = list(ids)
    if not ids:
        return set()
    table = connection.ops.quote_name(model._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {assign} WHERE {where} AND id IN ({marks}) RETURNING id",  # noqa: S608
            [*params, *ids],
        )
        return {row[0] for row in cursor.fetchall()}


def _is_marketing(message: Message) -> bool:
    template = message.content.get("template") if isinstance(message.content, dict) else None
    return (
        message.type == Message.Type.TEMPLATE
        and isinstance(template, dict)
        and str(template.get("category", "")).lower() == "marketing"
    )


def _window_open(contact: Contact, now: datetime) -> bool:
    return contact.last_inbound_at is not None and (
        now - contact.last_inbound_at < CUSTOMER_SERVICE_WINDOW
    )


def _outbound(message: Message) -> OutboundMessage:
    contact = message.contact
    return OutboundMessage(
        message_id=message.id,
        to=contact.wa_id or contact.user_id or "",
        type=message.type,
        content=message.content,
    )


def retry_delay(attempts: int) -> float:
    """Exponential back-off with jitter after the n-th failed attempt, capped."""
    base = min(
        float(settings.TASK_MAX_COUNTDOWN),
        settings.MESSAGE_SEND_RETRY_BACKOFF * 2 ** max(0, attempts - 1),
    )
    return random.uniform(base / 2, base)  # noqa: S311


class _Late:
    """The call would have started too long after its slot: it was not made."""


_LATE = _Late()


@dataclass
class _ChannelSend:
    """One channel's share of a send: rules, limits, paced provider calls, outcomes."""

    messages: list[Message]
    campaign: bool
    statuses: dict[int, str]
    deadline: float
    now: datetime = field(default_factory=timezone.now)
    # Contacts whose marketing cap this send took, and the value to put back should it not
    # go out: message id -> (contact id, previous last_marketing_at).
    caps: dict[int, tuple[int, datetime | None]] = field(default_factory=dict)

    @property
    def channel(self) -> Channel:
        return self.messages[0].channel

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            # Messages not handed to the provider yet are safe to send again.
            Message.objects.filter(
                id__in=[m.id for m in self.messages], status=Status.SENDING, send_started_at=None
            ).update(status=Status.QUEUED, updated_at=timezone.now())
            raise

    def _run(self) -> None:
        ready = self._check_rules(self.messages)
        if not ready:
            return
        wait_for_slot = pacing.slots_wait(channel_id=self.channel.id)
        if wait_for_slot > MAX_SLOT_WAIT:
            self._put_back(ready, wait_for_slot)
            return
        ready = self._take_pair_limit(ready)
        ready = self._take_tier(ready)
        ready = self._take_marketing_cap(ready)
        if ready:
            self._send_paced(ready)

    # --- Rules and limits ---------------------------------------------------------------

    def _check_rules(self, messages: list[Message]) -> list[Message]:
        failing: dict[str, list[Message]] = {}
        ready = []
        for message in messages:
            contact = message.contact
            if contact.opted_out_at is not None:
                failing.setdefault(Message.ERROR_OPTED_OUT, []).append(message)
            elif message.type != Message.Type.TEMPLATE and not _window_open(contact, self.now):
                failing.setdefault(Message.ERROR_OUTSIDE_WINDOW, []).append(message)
            elif (
                _is_marketing(message)
                and contact.marketing_held_until is not None
                and contact.marketing_held_until > self.now
            ):
                failing.setdefault(Message.ERROR_MARKETING_HELD, []).append(message)
            else:
                ready.append(message)
        texts = {
            Message.ERROR_OPTED_OUT: "The contact opted out.",
            Message.ERROR_OUTSIDE_WINDOW: "Free-form messages need a customer message in the "
            "last 24 hours; send a template.",
            Message.ERROR_MARKETING_HELD: "Marketing to this contact is on hold.",
        }
        for code, group in failing.items():
            self._fail(group, code, texts[code], count_attempt=False)
        return ready

    def _take_pair_limit(self, messages: list[Message]) -> list[Message]:
        """One message per user every PAIR_RATE_SECONDS; the others wait for their turn."""
        pair = timedelta(seconds=settings.PAIR_RATE_SECONDS)
        won = _update_returning_ids(
            Conversation,
            ids={m.conversation_id for m in messages if m.conversation_id},
            assign="last_outbound_at = %s",
            where="(last_outbound_at IS NULL OR last_outbound_at <= %s)",
            params=[self.now, self.now - pair],
        )
        ready, waiting = [], []
        for message in messages:
            if message.conversation_id is None:
                ready.append(message)
            elif message.conversation_id in won:
                won.discard(message.conversation_id)  # the next one to this user waits
                ready.append(message)
            else:
                waiting.append(message)
        if waiting:
            # At most one pair interval: the last message to each of these users went out
            # less than that ago.
            self._put_back(waiting, settings.PAIR_RATE_SECONDS)
        return ready

    def _take_tier(self, messages: list[Message]) -> list[Message]:
        """A template that opens a business-initiated conversation counts against the tier."""
        since = self.now - TIER_WINDOW
        opening = [
            m
            for m in messages
            if m.type == Message.Type.TEMPLATE
            and m.conversation is not None
            and not _window_open(m.contact, self.now)
            and not (
                m.conversation.business_initiated_at is not None
                and m.conversation.business_initiated_at > since
            )
        ]
        if not opening:
            return messages
        tier = self.channel.messaging_tier
        waiting: list[Message] = []
        opens_at: datetime | None = None
        with transaction.atomic():
            if tier is not None:
                pacing.channel_lock(channel_id=self.channel.id)
                window = Conversation.objects.filter(
                    channel_id=self.channel.id, business_initiated_at__gt=since
                )
                free = max(0, tier - window.count())
                opening, waiting = opening[:free], opening[free:]
                if waiting:
                    oldest = (
                        window.order_by("business_initiated_at")
                        .values_list("business_initiated_at", flat=True)
                        .first()
                    )
                    opens_at = oldest + TIER_WINDOW if oldest else None
            Conversation.objects.filter(id__in=[m.conversation_id for m in opening]).update(
                business_initiated_at=self.now
            )
        if waiting:
            delay = (opens_at - self.now).total_seconds() if opens_at else 60.0
            self._put_back(waiting, max(delay, 1.0))
        waiting_ids = {m.id for m in waiting}
        return [m for m in messages if m.id not in waiting_ids]

    def _take_marketing_cap(self, messages: list[Message]) -> list[Message]:
        """One marketing template per contact per MARKETING_FREQUENCY_CAP_HOURS, across all
        campaigns, taken atomically."""
        marketing = [m for m in messages if _is_marketing(m)]
        if not marketing:
            return messages
        cap = timedelta(hours=settings.MARKETING_FREQUENCY_CAP_HOURS)
        won = _update_returning_ids(
            Contact,
            ids={m.contact_id for m in marketing},
            assign="last_marketing_at = %s",
            where="(last_marketing_at IS NULL OR last_marketing_at <= %s)",
            params=[self.now, self.now - cap],
        )
        capped = []
        for message in marketing:
            if message.contact_id in won:
                won.discard(message.contact_id)
                self.caps[message.id] = (message.contact_id, message.contact.last_marketing_at)
            else:
                capped.append(message)
        if capped:
            self._fail(
                capped,
                Message.ERROR_FREQUENCY_CAP,
                "The contact already got a marketing template in the last "
                f"{settings.MARKETING_FREQUENCY_CAP_HOURS} hours.",
                count_attempt=False,
            )
        capped_ids = {m.id for m in capped}
        return [m for m in messages if m.id not in capped_ids]

    # --- Paced provider calls -----------------------------------------------------------

    def _send_paced(self, messages: list[Message]) -> None:
        channel = self.channel
        backend = backend_for(channel)
        pending = deque(messages)
        # One message (an API send) is called from this thread; a chunk from the process's pool.
        pool = provider_call_pool() if len(messages) > 1 else None
        in_flight: set[Future[tuple[Message, Any]]] = set()
        try:
            while pending or in_flight:
                if in_flight:
                    # Outcomes are recorded together: once the run's calls are all answered,
                    # or, while more slots are to be taken, those answered so far.
                    done, in_flight = wait(in_flight, timeout=0 if pending else None)
                    if done:
                        late = self._record([f.result() for f in done])
                        pending.extendleft(reversed(late))
                if not pending:
                    continue
                if time.monotonic() > self.deadline:
                    self._put_back(list(pending), 0)
                    pending.clear()
                    continue
                count = len(pending)
                if self.campaign:
                    count = min(count, pacing.campaign_run_size(channel.messages_per_second))
                reservation = pacing.slots_reserve(
                    channel_id=channel.id,
                    messages_per_second=channel.messages_per_second,
                    count=count,
                    campaign=self.campaign,
                    max_wait=MAX_SLOT_WAIT,
                )
                if not reservation.granted:
                    if reservation.delay > MAX_SLOT_WAIT:
                        self._put_back(list(pending), reservation.delay)
                        pending.clear()
                    else:
                        time.sleep(max(0.005, reservation.delay - pacing.CAMPAIGN_HORIZON))
                    continue
                first = time.monotonic() + reservation.delay
                run = [pending.popleft() for _ in range(reservation.granted)]
                slots = [first + index * reservation.interval for index in range(len(run))]
                for group in _slot_groups(slots):
                    # Each group is marked and handed over MARK_LEAD before its first slot, and
                    # the calls wait for their own slots: the mark's round trip does not delay
                    # a call, and a worker that dies leaves `unknown` without a call only the
                    # sends due within the next MARK_LEAD + MARK_GROUP.
                    pause = slots[group.start] - MARK_LEAD - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    # Slots already missed (a slow mark before) are left unmarked: those
                    # messages take new slots.
                    missed_before = time.monotonic() - LATE_AFTER
                    due = [i for i in range(group.start, group.stop) if slots[i] >= missed_before]
                    missed = [
                        run[i] for i in range(group.start, group.stop) if slots[i] < missed_before
                    ]
                    pending.extendleft(reversed(missed))
                    if not due:
                        continue
                    Message.objects.filter(id__in=[run[i].id for i in due]).update(
                        send_started_at=timezone.now()
                    )
                    for index in due:
                        if pool is None:
                            in_flight.add(_done(_call(backend, channel, run[index], slots[index])))
                        else:
                            in_flight.add(
                                pool.submit(_call, backend, channel, run[index], slots[index])
                            )
        finally:
            # No call of this send outlives it.
            wait(in_flight)

    # --- Outcomes -----------------------------------------------------------------------

    def _record(self, results: list[tuple[Message, Any]]) -> list[Message]:
        """Record what the provider answered; returns the messages whose slot was missed."""
        late: list[Message] = []
        sent: dict[int, str] = {}
        for message, outcome in results:
            if outcome is _LATE:
                late.append(message)
            elif isinstance(outcome, SendResult):
                sent[message.id] = outcome.provider_message_id
            elif isinstance(outcome, ProviderError):
                self._provider_error(message, outcome)
            else:
                self._unknown(message, outcome)
        if late:
            # Not handed to the provider after all: safe to send again until re-marked.
            Message.objects.filter(id__in=[m.id for m in late], status=Status.SENDING).update(
                send_started_at=None
            )
        if sent:
            messages_sent_record(sent=sent)
            send_metrics.sends_count("sent", len(sent))
            for message_id in sent:
                self.statuses[message_id] = Status.SENT
        return late

    def _provider_error(self, message: Message, error: ProviderError) -> None:
        code = error.code
        text = str(error)
        if code == META_PAIR_LIMIT:
            # Not an attempt that counts: the user's pair interval, then it goes.
            if message.conversation_id is not None:
                Conversation.objects.filter(id=message.conversation_id).update(
                    last_outbound_at=timezone.now()
                )
            self._put_back([message], error.retry_after or settings.PAIR_RATE_SECONDS)
        elif code in (META_MARKETING_CAP, META_MARKETING_STOPPED):
            hold = MARKETING_CAP_HOLD if code == META_MARKETING_CAP else MARKETING_STOPPED_HOLD
            Contact.objects.filter(id=message.contact_id).update(
                marketing_held_until=timezone.now() + hold
            )
            self._fail([message], code, text, count_attempt=True)
        elif isinstance(error, ProviderRetryableError):
            if code == META_THROUGHPUT:
                pacing.slots_push_back(channel_id=message.channel_id, seconds=1.0)
            attempts = message.attempts + 1
            if attempts > settings.MESSAGE_SEND_MAX_RETRIES:
                self._fail([message], code, text, count_attempt=True)
            else:
                delay = max(retry_delay(attempts), error.retry_after or 0.0)
                self._put_back([message], delay, error=error)
        else:
            if isinstance(error, ProviderCredentialError):
                channel_flag_credential_error(channel_id=message.channel_id, error=text)
            self._fail([message], code, text, count_attempt=True)
        logger.info(
            "Send of message %s failed with provider code %s (%s)",
            message.id,
            code or "-",
            type(error).__name__,
        )

    def _unknown(self, message: Message, error: BaseException) -> None:
        # The provider may have accepted it: reconciled from status webhooks, and sent again
        # (once) only if none names it within the window.
        logger.error("Send of message %s ended unknown: %s", message.id, type(error).__name__)
        send_metrics.sends_count("unknown", 1, type(error).__name__[:20])
        Message.objects.filter(id=message.id, status=Status.SENDING).update(
            status=Status.UNKNOWN,
            attempts=F("attempts") + 1,
            error_message=type(error).__name__,
            updated_at=timezone.now(),
        )
        self.statuses[message.id] = Status.UNKNOWN

    def _release_caps(self, messages: list[Message]) -> None:
        for message in messages:
            taken = self.caps.pop(message.id, None)
            if taken is not None:
                contact_id, previous = taken
                Contact.objects.filter(id=contact_id, last_marketing_at=self.now).update(
                    last_marketing_at=previous
                )

    def _fail(self, messages: list[Message], code: str, text: str, *, count_attempt: bool) -> None:
        now = timezone.now()
        changes: dict[str, Any] = {
            "status": Status.FAILED,
            "failed_at": now,
            "error_code": code[:20],
            "error_message": text[:1000],
            "next_attempt_at": None,
            "updated_at": now,
        }
        if count_attempt:
            changes["attempts"] = F("attempts") + 1
        failed = Message.objects.filter(
            id__in=[m.id for m in messages], status=Status.SENDING
        ).update(**changes)
        send_metrics.sends_count("failed", failed, code)
        self._release_caps(messages)
        for message in messages:
            self.statuses[message.id] = Status.FAILED

    def _put_back(
        self, messages: list[Message], delay: float, *, error: ProviderError | None = None
    ) -> None:
        """Back to `queued`, due in `delay` seconds, with its task scheduled for then."""
        delay = min(max(0.0, delay), float(settings.TASK_MAX_COUNTDOWN))
        now = timezone.now()
        changes: dict[str, Any] = {
            "status": Status.QUEUED,
            "next_attempt_at": now + timedelta(seconds=delay),
            "send_started_at": None,
            "updated_at": now,
        }
        if error is not None:
            changes.update(
                attempts=F("attempts") + 1,
                error_code=error.code[:20],
                error_message=str(error)[:1000],
            )
        ids = [m.id for m in messages]
        put_back = Message.objects.filter(id__in=ids, status=Status.SENDING).update(**changes)
        if error is not None:
            send_metrics.sends_count("retry", put_back, error.code)
        self._release_caps(messages)
        for message_id in ids:
            self.statuses[message_id] = Status.QUEUED
        messages_enqueue(message_ids=ids, campaign=self.campaign, countdown=delay)


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def provider_call_pool() -> ThreadPoolExecutor:
    """This process's threads for provider calls, shared by all its sends: threads (and their
    keep-alive connections) outlive a chunk. A forked worker builds its own."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(
                    max_workers=settings.MESSAGE_SEND_CONCURRENCY,
                    thread_name_prefix="provider-call",
                ),
            )
        return _pool[1]


def _slot_groups(slots: list[float]) -> Iterator[slice]:
    """Consecutive slots within MARK_GROUP of the first of their group."""
    start = 0
    while start < len(slots):
        stop = start + 1
        while stop < len(slots) and slots[stop] < slots[start] + MARK_GROUP:
            stop += 1
        yield slice(start, stop)
        start = stop


def _done(result: tuple[Message, Any]) -> Future[tuple[Message, Any]]:
    future: Future[tuple[Message, Any]] = Future()
    future.set_result(result)
    return future


def _call(
    backend: Backend, channel: Channel, message: Message, slot_at: float
) -> tuple[Message, Any]:
    """One provider call, in a pool thread: HTTP only, no database."""
    pause = slot_at - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    try:
        return message, backend.send(channel, _outbound(message), not_after=slot_at + LATE_AFTER)
    except SendSlotMissed:
        return message, _LATE
    except Exception as exc:
        return message, exc


def messages_enqueue(*, message_ids: list[int], campaign: bool, countdown: float = 0) -> bool:
    """Schedule the send task of queued messages; False when the broker cannot take it (the
    messages stay `queued` and the sweeper sends them later)."""
    from conversations.tasks import send_message, send_messages

    try:
        if len(message_ids) == 1 and not campaign:
            send_message.apply_async(args=(message_ids[0],), countdown=countdown)
        else:
            send_messages.apply_async(args=(message_ids, campaign), countdown=countdown)
    except Exception:
        logger.warning("Broker unavailable: %s send(s) wait for the sweeper", len(message_ids))
        return False
    return True


def messages_resend_unreported(
    *, reported_until: datetime | None = None, limit: int = 1000
) -> list[int]:
    """Send again, once, the `unknown` sends that no status webhook has named within
    SEND_UNKNOWN_RESEND_AFTER_SECONDS of their call; returns their ids.

    The provider reports every message it accepts, so such a send never reached it. Every
    status webhook received before `reported_until` must have been processed (the caller
    knows how far that is; default now): a call counts as unreported only once its whole
    window lies before that. The message goes back to `queued` as the same row, so the send
    rules (opt-out, window, caps) and the pacing apply again, and a late status of the first
    attempt still finds it: before the resend goes out, that status settles it and nothing
    is resent; after, the message records the first attempt's id as a double
    (`earlier_provider_message_id`).
    """
    now = timezone.now()
    horizon = min(now, reported_until) if reported_until is not None else now
    cutoff = horizon - timedelta(seconds=settings.SEND_UNKNOWN_RESEND_AFTER_SECONDS)
    unreported = Q(
        status=Status.UNKNOWN,
        direction=Message.Direction.OUTBOUND,
        provider_message_id=None,
        resent_at=None,
        send_started_at__lt=cutoff,
    )
    candidates = list(
        Message.objects.filter(unreported).order_by("id").values_list("id", flat=True)[:limit]
    )
    candidates = _twilio_unaccepted(candidates)
    if not candidates:
        return []
    # One conditional UPDATE: a concurrent resend, or a status applied meanwhile, wins.
    resent = sorted(
        _update_returning_ids(
            Message,
            ids=candidates,
            assign="status = %s, resent_at = %s, send_started_at = NULL, next_attempt_at = %s, "
            "updated_at = %s",
            where="status = %s AND provider_message_id IS NULL AND resent_at IS NULL",
            params=[Status.QUEUED, now, now, now, Status.UNKNOWN],
        )
    )
    if not resent:
        return []
    logger.warning("%s unknown send(s) that no status named are sent again", len(resent))
    send_metrics.sends_count("resent", len(resent))
    priorities = dict(Message.objects.filter(id__in=resent).values_list("id", "priority"))
    for campaign in (False, True):
        ids = [i for i in resent if (priorities.get(i) == Message.Priority.LOW) == campaign]
        for start in range(0, len(ids), 100):
            # Should the broker not take it, the message stays `queued` for the sweeper.
            messages_enqueue(message_ids=ids[start : start + 100], campaign=campaign)
    return resent


# Twilio's creation times are whole seconds, and its clock is not ours.
TWILIO_CLOCK_SKEW = timedelta(seconds=30)


def _twilio_unaccepted(message_ids: list[int]) -> list[int]:
    """Of these unknown sends, those that Twilio does not hold, asked of its Messages resource
    (it sends no status for a message it keeps queued); Meta's are all kept. A send Twilio holds
    records its SID and is `sent`; one Twilio cannot be asked about waits for the next round."""
    twilio = list(
        Message.objects.select_related("channel", "contact").filter(
            id__in=message_ids, provider=Channel.Provider.TWILIO
        )
    )
    if not twilio:
        return message_ids
    from whatsapp_platform.lib.providers.twilio import messages_created_since

    held: set[int] = set()
    for message in twilio:
        called_at = message.send_started_at or timezone.now()  # selected on it: never empty
        try:
            sids = messages_created_since(
                message.channel, to=_outbound(message).to, since=called_at - TWILIO_CLOCK_SKEW
            )
        except ProviderError as exc:
            logger.warning("Twilio's messages could not be listed (%s)", type(exc).__name__)
            held.add(message.id)
            continue
        # Our other messages to this recipient are already recorded; what is left is this one.
        known = set(
            Message.objects.filter(
                provider=Channel.Provider.TWILIO, provider_message_id__in=sids
            ).values_list("provider_message_id", flat=True)
        )
        accepted = [sid for sid in sids if sid not in known]
        if accepted:
            held.add(message.id)
            messages_sent_record(sent={message.id: accepted[0]})
    return [i for i in message_ids if i not in held]


def messages_sweep(*, overdue_after: float | None = None, limit: int = 1000) -> dict[str, int]:
    """Mark sends stuck in `sending` past the lease `unknown`; enqueue queued ones whose task
    is overdue (the broker was down, or the task was lost)."""
    now = timezone.now()
    lease = now - timedelta(seconds=settings.MESSAGE_SEND_LEASE_SECONDS)
    unknown = Message.objects.filter(status=Status.SENDING, send_started_at__lt=lease).update(
        status=Status.UNKNOWN, updated_at=now
    )
    if unknown:
        logger.warning(
            "%s send(s) handed to the provider by a worker that died are unknown", unknown
        )
    # Claimed by a worker that died before handing them to the provider: sent again.
    Message.objects.filter(
        status=Status.SENDING, send_started_at=None, updated_at__lt=lease
    ).update(status=Status.QUEUED, next_attempt_at=None, updated_at=now)
    after = settings.MESSAGE_REQUEUE_AFTER_SECONDS if overdue_after is None else overdue_after
    cutoff = now - timedelta(seconds=after)
    overdue = list(
        Message.objects.filter(
            Q(next_attempt_at__lte=cutoff) | Q(next_attempt_at=None, queued_at__lte=cutoff),
            status=Status.QUEUED,
            direction=Message.Direction.OUTBOUND,
        )
        .order_by("priority", "id")
        .values_list("id", "priority")[:limit]
    )
    enqueued = 0
    for campaign in (False, True):
        ids = [i for i, priority in overdue if (priority == Message.Priority.LOW) == campaign]
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            if not messages_enqueue(message_ids=chunk, campaign=campaign):
                return {"unknown": unknown, "enqueued": enqueued}
            # Touched so the next sweep leaves them to the task just sent.
            Message.objects.filter(id__in=chunk, status=Status.QUEUED).update(next_attempt_at=now)
            enqueued += len(chunk)
    return {"unknown": unknown, "enqueued": enqueued}
