"""AI replies: one answer per burst of customer messages, from the OpenAI Responses API.

1. `reply_schedule` runs for each new inbound message. On a channel whose assistant is on, it
   pushes the conversation's `reply_due_at` to the end of the debounce window and schedules the
   reply task for then; a handover keyword hands the conversation to a human instead.
2. `conversation_reply` (the reply task) returns quietly while the reply is not due (a newer
   message pushed it back), takes the conversation's lease (`processing_reply` until
   `lease_expires_at`) with one conditional UPDATE that exactly one worker wins, gathers the
   inbound messages after `answered_until_id`, asks the model (the conversation's state is an
   OpenAI conversation, `ai_conversation_id`), and in one transaction queues the answer
   through the send pipeline and records an `AiReply` with its cost. A message that arrived
   meanwhile gets a follow-up reply once the lease is released.
3. OpenAI errors and timeouts retry with back-off (status `retry`); after the last attempt the
   fallback text is sent once and the conversation is flagged for a human. Once the answer is
   recorded, only the send pipeline retries: the model is not asked again.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

import openai
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Sum, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from conversations.metrics import ai_replies, ai_reply_latency, ai_tokens
from conversations.models import AiReply, Assistant, Conversation, MediaAsset, Message
from conversations.sending import CUSTOMER_SERVICE_WINDOW, message_queue

logger = logging.getLogger(__name__)

Status = Conversation.Status

# The inbound messages that ask for an answer; other kinds are context only.
REPLY_TRIGGERS = (
    Message.Type.TEXT,
    Message.Type.BUTTON,
    Message.Type.INTERACTIVE,
    Message.Type.IMAGE,
)
# Images larger than this are described to the model instead of shown.
IMAGE_MAX_BYTES = 10 * 1024 * 1024
WHATSAPP_TEXT_MAX = 4096


class AiRetryableError(Exception):
    """The model could not answer now (rate limit, server error, timeout): try again later."""


class AiPermanentError(Exception):
    """The model will not answer this request (bad request, credentials, empty answer)."""


@dataclass(frozen=True)
class ReplyOutcome:
    outcome: str
    retry_in: float | None = None  # seconds, when the task should run again


def ai_unavailable_reason() -> str:
    """Why AI replies are off for every channel, or "" when they can run."""
    if not settings.OPENAI_API_KEY:
        return "OPENAI_API_KEY is not set: AI replies are off."
    return ""


# --- Budget ---------------------------------------------------------------------------------


def _month_start() -> datetime:
    return timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def organization_tokens(*, organization_id: int, this_month: bool = False) -> int:
    replies = AiReply.objects.filter(organization_id=organization_id)
    if this_month:
        replies = replies.filter(created_at__gte=_month_start())
    totals = replies.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"))
    return int(totals["i"] or 0) + int(totals["o"] or 0)


def monthly_tokens_by_organization() -> dict[int, int]:
    """Tokens each organization spent this month, input and output together."""
    rows = (
        AiReply.objects.filter(created_at__gte=_month_start())
        .values("organization_id")
        .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"))
    )
    return {row["organization_id"]: int(row["i"] or 0) + int(row["o"] or 0) for row in rows}


def budget_exhausted(*, organization_id: int) -> bool:
    """True when the organization spent AI_MONTHLY_TOKEN_BUDGET this month (0: no budget)."""
    budget = settings.AI_MONTHLY_TOKEN_BUDGET
    return (
        bool(budget)
        and organization_tokens(organization_id=organization_id, this_month=True) >= budget
    )


# --- Scheduling -----------------------------------------------------------------------------


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def handover_requested(text: str, keywords: list[str]) -> bool:
    """The text holds one of the keywords as whole words, in any case."""
    said = _words(text)
    return any(_words(k).strip() and _words(k) in said for k in keywords)


def _enqueue_reply(conversation_id: int, countdown: float) -> None:
    from conversations.tasks import reply_to_conversation

    def send() -> None:
        try:
            reply_to_conversation.apply_async(args=(conversation_id,), countdown=countdown)
        except Exception:
            # The reply sweeper finds the conversation still pending.
            logger.warning("Broker unavailable: reply of conversation %s waits", conversation_id)

    transaction.on_commit(send)


def reply_schedule(*, message: Message) -> bool:
    """Schedule the debounced AI reply for a new inbound message; True when scheduled.

    Opt-out and opt-in keywords are not passed here: they get no AI reply."""
    if message.direction != Message.Direction.INBOUND or message.conversation_id is None:
        return False
    if message.type not in REPLY_TRIGGERS or ai_unavailable_reason():
        return False
    assistant = Assistant.objects.filter(channel_id=message.channel_id, enabled=True).first()
    if assistant is None:
        return False
    if message.contact.opted_out_at is not None:
        return False
    if handover_requested(message.text, assistant.keywords):
        conversation_handover(conversation_id=message.conversation_id, reason="keyword")
        return False
    delay = float(min(assistant.debounce_seconds, settings.TASK_MAX_COUNTDOWN))
    due = timezone.now() + timedelta(seconds=delay)
    scheduled = (
        Conversation.objects.filter(id=message.conversation_id)
        .exclude(status=Status.HANDOVER)
        .update(
            reply_due_at=due,
            # A reply being generated keeps its status; it answers this one in a follow-up.
            status=Case(
                When(status=Status.PROCESSING_REPLY, then=F("status")),
                default=Value(Status.REPLY_PENDING),
            ),
        )
    )
    if not scheduled:
        return False
    _enqueue_reply(message.conversation_id, delay)
    return True


# --- Handover -------------------------------------------------------------------------------


def conversation_handover(*, conversation_id: int, reason: str) -> bool:
    """Pause AI replies for the conversation until it is resumed."""
    moved = (
        Conversation.objects.filter(id=conversation_id)
        .exclude(status=Status.HANDOVER)
        .update(
            status=Status.HANDOVER,
            handed_over_at=timezone.now(),
            needs_human=True,
            lease_expires_at=None,
            reply_due_at=None,
            updated_at=timezone.now(),
        )
    )
    if moved:
        ai_replies.labels(outcome="handover").inc()
        logger.info("Conversation %s handed over to a human (%s)", conversation_id, reason)
    return bool(moved)


def _latest_inbound_id(conversation_id: int) -> int:
    latest = (
        Message.objects.filter(conversation_id=conversation_id, direction=Message.Direction.INBOUND)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return latest or 0


def conversation_resume(*, conversation_id: int) -> bool:
    """Turn AI replies back on. Messages a human handled meanwhile are not answered again."""
    return bool(
        Conversation.objects.filter(id=conversation_id, status=Status.HANDOVER).update(
            status=Status.OPEN,
            handed_over_at=None,
            needs_human=False,
            answered_until_id=Greatest(F("answered_until_id"), _latest_inbound_id(conversation_id)),
            updated_at=timezone.now(),
        )
    )


def conversation_agent_reply(
    *, conversation: Conversation, text: str = "", template: dict[str, Any] | None = None
) -> Message:
    """A human agent's answer, through the send pipeline: free-form text inside the 24-hour
    window, a template (`{"name", "language", "body_parameters"}`) outside it.

    Raises ValueError with a message for the agent when the kind does not fit the window.
    """
    contact = conversation.contact
    now = timezone.now()
    window_open = contact.last_inbound_at is not None and (
        now - contact.last_inbound_at < CUSTOMER_SERVICE_WINDOW
    )
    if contact.opted_out_at is not None:
        raise ValueError("The contact opted out: nothing can be sent.")
    content: dict[str, Any]
    if template:
        message_type, content, body = Message.Type.TEMPLATE, {"template": template}, ""
    elif text.strip():
        if not window_open:
            raise ValueError(
                "The customer's last message is more than 24 hours old: send a template."
            )
        message_type, content, body = Message.Type.TEXT, {"body": text.strip()}, text.strip()
    else:
        raise ValueError("Write a reply or choose a template.")
    with transaction.atomic():
        message, _ = message_queue(
            channel=conversation.channel,
            contact=contact,
            type=message_type,
            content=content,
            text=body,
            priority=Message.Priority.HIGH,
        )
        # What the customer said so far is handled: the AI does not answer it as well.
        Conversation.objects.filter(id=conversation.id).update(
            answered_until_id=Greatest(F("answered_until_id"), _latest_inbound_id(conversation.id)),
            updated_at=now,
        )
    return message


# --- The reply ------------------------------------------------------------------------------


def _take_lease(conversation_id: int) -> Any:
    """The lease's expiry when this worker won it, else None. Exactly one worker wins; an
    expired lease (its worker died) can be taken over."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    won = (
        Conversation.objects.filter(id=conversation_id)
        .exclude(status__in=(Status.HANDOVER, Status.CLOSED))
        .exclude(status=Status.PROCESSING_REPLY, lease_expires_at__gte=now)
        .exclude(reply_due_at__gt=now)
        .update(status=Status.PROCESSING_REPLY, lease_expires_at=lease, updated_at=now)
    )
    return lease if won else None


def _release(conversation_id: int, lease: Any, status: str, **changes: Any) -> bool:
    return bool(
        Conversation.objects.filter(
            id=conversation_id, status=Status.PROCESSING_REPLY, lease_expires_at=lease
        ).update(status=status, lease_expires_at=None, updated_at=timezone.now(), **changes)
    )


@cache
def _client(api_key: str, base_url: str | None, timeout: float) -> openai.OpenAI:
    # Retries are the task's, with back-off and a fallback after the last one.
    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)


def openai_client() -> openai.OpenAI:
    return _client(settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_TIMEOUT)


def _describe(message: Message, asset: MediaAsset | None) -> list[dict[str, Any]]:
    """The model's input parts for one inbound message."""
    caption = message.text.strip()
    if message.type in (Message.Type.TEXT, Message.Type.BUTTON, Message.Type.INTERACTIVE):
        return [{"type": "input_text", "text": caption or f"[{message.type}]"}]
    if message.type == Message.Type.IMAGE and asset is not None:
        if asset.state == MediaAsset.State.PENDING:
            raise AiRetryableError("The image is not stored yet.")
        if asset.state == MediaAsset.State.STORED and (asset.size or 0) <= IMAGE_MAX_BYTES:
            from whatsapp_platform.lib.storage import archive_storage

            stream = archive_storage().open(asset.storage_key)
            try:
                data = stream.read()
            finally:
                stream.close()
            url = f"data:{asset.mime_type or 'image/jpeg'};base64,{base64.b64encode(data).decode()}"
            parts: list[dict[str, Any]] = [
                {"type": "input_text", "text": caption or "[The customer sent this image]"},
                {"type": "input_image", "image_url": url, "detail": "auto"},
            ]
            return parts
    described = f"[The customer sent {message.type}"
    if asset is not None and asset.filename:
        described += f" named {asset.filename}"
    described += f": {caption}]" if caption else "]"
    return [{"type": "input_text", "text": described}]


def _model_input(conversation: Conversation, history_size: int) -> tuple[list[dict[str, Any]], int]:
    """The messages the model has not seen yet (at most history_size of the earlier ones),
    and the id of the last one. The model's own answers are in its state already."""
    unanswered = Message.objects.filter(
        conversation=conversation,
        direction=Message.Direction.INBOUND,
        id__gt=conversation.answered_until_id,
    ).count()
    limit = max(history_size, unanswered)
    recent = list(
        Message.objects.filter(conversation=conversation, id__gt=conversation.ai_context_until_id)
        .exclude(status=Message.Status.FAILED, direction=Message.Direction.OUTBOUND)
        .exclude(ai_reply__outcome=AiReply.Outcome.SENT)
        .order_by("-id")[:limit]
    )
    recent.reverse()
    assets = {
        a.message_id: a
        for a in MediaAsset.objects.filter(message_id__in=[m.id for m in recent]).order_by("id")
    }
    items: list[dict[str, Any]] = []
    for message in recent:
        if message.direction == Message.Direction.INBOUND:
            items.append({"role": "user", "content": _describe(message, assets.get(message.id))})
        elif message.type == Message.Type.TEMPLATE:
            name = (message.content.get("template") or {}).get("name", "")
            items.append({"role": "assistant", "content": f"[Template {name} was sent]"})
        elif message.text:
            items.append({"role": "assistant", "content": message.text})
    return items, (recent[-1].id if recent else conversation.ai_context_until_id)


@dataclass(frozen=True)
class _Answer:
    text: str
    response_id: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: int


def _ask(conversation: Conversation, assistant: Assistant, items: list[dict[str, Any]]) -> _Answer:
    """One Responses API call in the conversation's stored state; errors classified."""
    client = openai_client()
    started = time.monotonic()
    try:
        if not conversation.ai_conversation_id:
            # Metadata names our ids only: no phone numbers or names leave the platform.
            state = client.conversations.create(metadata={"conversation_id": str(conversation.id)})
            conversation.ai_conversation_id = state.id
            Conversation.objects.filter(id=conversation.id).update(ai_conversation_id=state.id)
        response = client.responses.create(
            model=assistant.model,
            instructions=assistant.instructions or None,
            conversation=conversation.ai_conversation_id,
            input=cast(Any, items),
            truncation="auto",
        )
    except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
        raise AiRetryableError(type(exc).__name__) from exc
    except openai.APIStatusError as exc:
        if exc.status_code in (408, 409) or exc.status_code >= 500:
            raise AiRetryableError(f"HTTP {exc.status_code}") from exc
        raise AiPermanentError(f"HTTP {exc.status_code}") from exc
    latency = time.monotonic() - started
    text = (response.output_text or "").strip()
    if not text:
        raise AiPermanentError("The model answered no text.")
    usage = response.usage
    return _Answer(
        text=text[:WHATSAPP_TEXT_MAX],
        response_id=response.id,
        model=response.model or assistant.model,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        latency_ms=round(latency * 1000),
    )


def _record(
    conversation: Conversation,
    lease: Any,
    first_id: int,
    last_id: int,
    text: str,
    outcome: str,
    answer: _Answer | None = None,
    context_until_id: int = 0,
) -> bool:
    """Queue the answer and record it, once per last inbound message; False when the lease
    was lost (handed over or taken over meanwhile) and nothing was sent."""
    with transaction.atomic():
        held = (
            Conversation.objects.select_for_update()
            .filter(id=conversation.id, status=Status.PROCESSING_REPLY, lease_expires_at=lease)
            .exists()
        )
        if not held:
            return False
        last = Message.objects.get(id=last_id)
        message, created = message_queue(
            channel=conversation.channel,
            contact=conversation.contact,
            type=Message.Type.TEXT,
            content={"body": text},
            text=text,
            priority=Message.Priority.HIGH,
            idempotency_key=f"ai-{outcome}-{conversation.id}-{last_id}",
            reply_to=last,
        )
        if created:
            AiReply.objects.create(
                organization_id=conversation.organization_id,
                conversation=conversation,
                message=message,
                first_message_id=first_id,
                last_message_id=last_id,
                outcome=outcome,
                response_id=answer.response_id if answer else "",
                model=answer.model if answer else "",
                input_tokens=answer.input_tokens if answer else 0,
                output_tokens=answer.output_tokens if answer else 0,
                latency_ms=answer.latency_ms if answer else 0,
            )
        changes: dict[str, Any] = {"answered_until_id": Greatest(F("answered_until_id"), last_id)}
        if answer is not None:
            changes["ai_context_until_id"] = Greatest(F("ai_context_until_id"), context_until_id)
        Conversation.objects.filter(id=conversation.id).update(**changes)
    return True


def conversation_reply(*, conversation_id: int, attempt: int = 0) -> ReplyOutcome:
    """Answer the conversation's unanswered messages once, if it is due and nobody else is."""
    due = (
        Conversation.objects.filter(id=conversation_id)
        .values_list("reply_due_at", flat=True)
        .first()
    )
    if due is not None and due > timezone.now():
        return ReplyOutcome("not_due")  # a newer message's task answers the whole burst
    lease = _take_lease(conversation_id)
    if lease is None:
        return ReplyOutcome("busy")
    outcome = ReplyOutcome("error")
    try:
        outcome = _reply(conversation_id, lease, attempt)
    finally:
        final = {
            "sent": Status.REPLY_SENT,
            "fallback": Status.OPEN,
            "retry": Status.RETRY,
        }.get(outcome.outcome, Status.OPEN)
        changes: dict[str, Any] = {}
        if outcome.outcome == "error":  # an unexpected failure: a human looks at it
            changes["needs_human"] = True
        if outcome.retry_in is not None:
            changes["reply_due_at"] = timezone.now() + timedelta(seconds=outcome.retry_in)
        _release(conversation_id, lease, final, **changes)
    if outcome.outcome == "sent":
        _follow_up(conversation_id)
    return outcome


def _reply(conversation_id: int, lease: Any, attempt: int) -> ReplyOutcome:
    conversation = Conversation.objects.select_related("channel", "contact").get(id=conversation_id)
    assistant = Assistant.objects.filter(channel_id=conversation.channel_id, enabled=True).first()
    if assistant is None or ai_unavailable_reason():
        return ReplyOutcome("off")
    unanswered = list(
        Message.objects.filter(
            conversation=conversation,
            direction=Message.Direction.INBOUND,
            id__gt=conversation.answered_until_id,
        )
        .order_by("id")
        .values_list("id", "type")
    )
    if not any(kind in REPLY_TRIGGERS for _, kind in unanswered):
        return ReplyOutcome("nothing")
    first_id, last_id = unanswered[0][0], unanswered[-1][0]
    contact = conversation.contact
    now = timezone.now()
    skip = ""
    if contact.opted_out_at is not None:
        skip = "opted_out"
    elif contact.last_inbound_at is None or now - contact.last_inbound_at >= (
        CUSTOMER_SERVICE_WINDOW
    ):
        skip = "outside_window"
    if skip:
        ai_replies.labels(outcome=skip).inc()
        Conversation.objects.filter(id=conversation.id).update(
            answered_until_id=Greatest(F("answered_until_id"), last_id)
        )
        return ReplyOutcome(skip)
    if budget_exhausted(organization_id=conversation.organization_id):
        ai_replies.labels(outcome="budget_exhausted").inc()
        logger.warning(
            "Organization %s spent its monthly AI token budget: conversation %s needs a human",
            conversation.organization_id,
            conversation.id,
        )
        Conversation.objects.filter(id=conversation.id).update(needs_human=True)
        return ReplyOutcome("budget_exhausted")
    try:
        items, context_until_id = _model_input(conversation, assistant.history_size)
        answer = _ask(conversation, assistant, items)
    except AiRetryableError as exc:
        if attempt < settings.AI_REPLY_MAX_RETRIES:
            delay = min(
                float(settings.TASK_MAX_COUNTDOWN), settings.AI_REPLY_RETRY_BACKOFF * 2**attempt
            )
            logger.info(
                "AI reply of conversation %s will retry in %.0fs: %s", conversation.id, delay, exc
            )
            ai_replies.labels(outcome="retry").inc()
            return ReplyOutcome("retry", retry_in=delay)
        logger.warning("AI reply of conversation %s failed for good: %s", conversation.id, exc)
        return _fallback(conversation, lease, first_id, last_id, assistant)
    except AiPermanentError as exc:
        logger.warning("AI reply of conversation %s refused: %s", conversation.id, exc)
        return _fallback(conversation, lease, first_id, last_id, assistant)
    ai_reply_latency.observe(answer.latency_ms / 1000)
    ai_tokens.labels(model=answer.model, kind="input").inc(answer.input_tokens)
    ai_tokens.labels(model=answer.model, kind="output").inc(answer.output_tokens)
    if not _record(
        conversation, lease, first_id, last_id, answer.text, "sent", answer, context_until_id
    ):
        return ReplyOutcome("lease_lost")
    ai_replies.labels(outcome="sent").inc()
    return ReplyOutcome("sent")


def _fallback(
    conversation: Conversation, lease: Any, first_id: int, last_id: int, assistant: Assistant
) -> ReplyOutcome:
    """The fallback text, once, and the conversation flagged for a human."""
    if not _record(conversation, lease, first_id, last_id, assistant.fallback_text, "fallback"):
        return ReplyOutcome("lease_lost")
    Conversation.objects.filter(id=conversation.id).update(needs_human=True)
    ai_replies.labels(outcome="fallback").inc()
    return ReplyOutcome("fallback")


def _follow_up(conversation_id: int) -> None:
    """Messages that arrived while the answer was generated get a reply of their own."""
    conversation = Conversation.objects.filter(id=conversation_id).first()
    if conversation is None or conversation.status == Status.HANDOVER:
        return
    waiting = Message.objects.filter(
        conversation_id=conversation_id,
        direction=Message.Direction.INBOUND,
        id__gt=conversation.answered_until_id,
        type__in=REPLY_TRIGGERS,
    ).exists()
    if not waiting:
        return
    Conversation.objects.filter(id=conversation_id, status=Status.REPLY_SENT).update(
        status=Status.REPLY_PENDING
    )
    countdown = 0.0
    if conversation.reply_due_at is not None:
        countdown = max(0.0, (conversation.reply_due_at - timezone.now()).total_seconds())
    _enqueue_reply(conversation_id, countdown)


def replies_sweep(*, overdue_after_seconds: int = 60, limit: int = 500) -> int:
    """Enqueue replies whose task was lost: pending or retrying past their due time, or whose
    lease expired (the worker died)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=overdue_after_seconds)
    stuck = list(
        Conversation.objects.filter(
            status__in=(Status.REPLY_PENDING, Status.RETRY), reply_due_at__lt=cutoff
        ).values_list("id", flat=True)[:limit]
    ) + list(
        Conversation.objects.filter(
            status=Status.PROCESSING_REPLY, lease_expires_at__lt=now
        ).values_list("id", flat=True)[:limit]
    )
    for conversation_id in stuck:
        Conversation.objects.filter(id=conversation_id).update(reply_due_at=now)
        _enqueue_reply(conversation_id, 0)
    return len(stuck)
