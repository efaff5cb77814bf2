"""Campaign fan-out: a running campaign's audience becomes messages, chunk by chunk, at the
channel's rate.

Launch and resume call `fan_out_start`, which enqueues CAMPAIGN_FANOUT_SENDERS chunk senders on
the `outgoing` queue. Each sender works for a bounded time, round after round:

1. the campaign must still be running and its template sendable (a pause stops new chunks
   within a round);
2. it takes the next pending audience rows with `SELECT ... FOR UPDATE SKIP LOCKED`, so senders
   on any number of machines never take the same rows;
3. it re-checks each contact (opted out, marketing frequency cap, marketing hold): those are
   skipped with the reason; for the others it writes one template message each, already
   claimed (`sending`), and links it to its row, in the same transaction;
4. it hands the chunk to the send pipeline (`messages_send`), which paces each message and
   records the outcome, and counts the failures in a row.

Then it enqueues itself again while work remains. Nobody is messaged twice: a row is linked to
its message when the message is written, and a message is claimed once (written claimed, or
claimed by the pipeline when queued again), so sent once. A worker that dies mid-chunk leaves
rows pending (not taken; another sender takes them), or linked to a message not yet handed to
the provider (queued again by the sweeper, sent later, once) or to one handed over (reconciled
from its status webhook, or sent again once if none names it: conversations.sending). Every round writes the
campaign's heartbeat; the sweeper restarts the fan-out of running campaigns whose heartbeat has
stopped.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns import services
from campaigns.models import Campaign, CampaignAudience, MessageTemplate
from conversations import pacing
from conversations.models import Conversation, Message
from whatsapp_platform.celery import enqueue_on_commit
from whatsapp_platform.lib.bulk import rows_insert

logger = logging.getLogger(__name__)

Status = Message.Status

# The senders' chunks together hold at most a second of the channel's rate, so that a pause
# takes effect within a second or two; and a chunk at most one campaign run of slots
# (pacing.campaign_run_size), so that its sender reserves it at once. A remainder left for a
# second run would wait behind the other senders' runs, and the senders would end their chunks
# together, leaving the channel idle while they all take the next.
CHUNK_MAX = 250
# No heartbeat for this long: no sender is working on the campaign. Senders write it at most
# every few seconds.
STALLED_AFTER = timedelta(seconds=60)
BEAT_EVERY = timedelta(seconds=5)
# A queued campaign message this old is one whose sender died before handing it on.
ORPHANED_AFTER = timedelta(seconds=60)
PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def sender_budget_seconds() -> float:
    """How long one chunk sender task works: well under the task's soft time limit and the
    time SQS waits before it hands an unacknowledged task to another worker."""
    return float(
        min(30, settings.CELERY_TASK_SOFT_TIME_LIMIT // 4, settings.SQS_VISIBILITY_TIMEOUT // 4)
    )


def fan_out_start(*, campaign_id: int) -> None:
    """Start sending a running campaign: enqueue its chunk senders once the caller commits.

    Safe to call again (resume, the sweeper): senders that find no work end at once.
    """
    from campaigns.tasks import send_campaign_chunks

    # Counts as a heartbeat, so the sweeper leaves the new senders time to start.
    Campaign.objects.filter(id=campaign_id).update(fanout_heartbeat_at=timezone.now())
    for _ in range(settings.CAMPAIGN_FANOUT_SENDERS):
        enqueue_on_commit(send_campaign_chunks, campaign_id)


def campaign_chunks_send(*, campaign_id: int) -> bool:
    """Send chunks of the campaign's audience for a bounded time.

    Returns True when the caller should enqueue another round, False when the campaign is not
    running, all its rows are taken, or other senders hold the rest.
    """
    deadline = time.monotonic() + sender_budget_seconds()
    while time.monotonic() < deadline:
        campaign = Campaign.objects.select_related("template", "channel").get(id=campaign_id)
        if campaign.status != Campaign.Status.RUNNING:
            return False
        if not campaign.template.is_sendable:
            _pause(campaign_id, f"Template {campaign.template} is {campaign.template.status}.")
            return False
        now = timezone.now()
        if campaign.fanout_heartbeat_at is None or campaign.fanout_heartbeat_at < now - BEAT_EVERY:
            Campaign.objects.filter(id=campaign_id).update(fanout_heartbeat_at=now)
        taken, message_ids = _chunk_take(campaign)
        if not taken:
            message_ids = _orphaned_message_ids(campaign_id)
            if not message_ids:
                campaign_complete_if_done(campaign_id=campaign_id)
                return False
        if message_ids:
            from conversations.sending import messages_send

            # Orphans are queued, so they are claimed again; a chunk's own are written claimed.
            statuses = messages_send(message_ids=message_ids, campaign=True, claimed=bool(taken))
            if campaign.consecutive_failures or Status.FAILED in statuses.values():
                _failures_count(campaign_id, message_ids)
    return True


def chunk_size(campaign: Campaign) -> int:
    rate = int(campaign.channel.messages_per_second or CHUNK_MAX)
    senders = max(1, int(settings.CAMPAIGN_FANOUT_SENDERS))
    return max(1, min(CHUNK_MAX, rate // senders, pacing.campaign_run_size(rate)))


class _Row(NamedTuple):
    """A pending audience row and what the send-time rules need of its contact."""

    id: int
    contact_id: int
    variables: dict[str, Any]
    contact__organization_id: int
    contact__opted_out_at: datetime | None
    contact__last_marketing_at: datetime | None
    contact__marketing_held_until: datetime | None


def _skip_reason(row: _Row, template: MessageTemplate, now: datetime) -> str:
    if row.contact__organization_id != template.organization_id:
        return "not_in_organization"  # never another tenant's contact
    if row.contact__opted_out_at is not None:
        return Message.ERROR_OPTED_OUT
    if template.category == MessageTemplate.Category.MARKETING:
        cap = timedelta(hours=settings.MARKETING_FREQUENCY_CAP_HOURS)
        last = row.contact__last_marketing_at
        if last is not None and last > now - cap:
            return Message.ERROR_FREQUENCY_CAP
        held = row.contact__marketing_held_until
        if held is not None and held > now:
            return Message.ERROR_MARKETING_HELD
    return ""


def template_content(template: MessageTemplate, variables: dict[str, Any]) -> dict[str, Any]:
    """The provider-neutral template content (see whatsapp_platform/lib/providers/base.py).

    Body parameters follow the placeholders of the body in order, each looked up in the row's
    variables by its number or name; a header or buttons the row names are passed on.
    """
    names = PLACEHOLDER.findall(template.body)
    header = variables.get("header")
    buttons = variables.get("buttons")
    return {
        "template": {
            "name": template.name,
            "language": template.language,
            "provider_template_id": template.provider_template_id,
            # Not sent to providers: the pipeline's frequency cap applies to marketing only.
            "category": template.category,
            "body_parameters": [str(variables.get(name, "")) for name in names],
            "header": header if isinstance(header, dict) else None,
            "buttons": [b for b in buttons if isinstance(b, dict)]
            if isinstance(buttons, list)
            else [],
        }
    }


def _rendered_body(template: MessageTemplate, variables: dict[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: str(variables.get(m.group(1), "")), template.body)


@transaction.atomic
def _chunk_take(campaign: Campaign) -> tuple[int, list[int]]:
    """Take the next pending rows; skip those that may not be messaged now, write a queued
    message for each of the others and link it. Returns (rows taken, message ids)."""
    # Plain tuples, not model instances: building those costs more than the queries.
    rows = [
        _Row(*values)
        for values in CampaignAudience.objects.filter(
            campaign_id=campaign.id, state=CampaignAudience.State.PENDING
        )
        .order_by("id")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list(*_Row._fields)[: chunk_size(campaign)]
    ]
    if not rows:
        return 0, []
    now = timezone.now()
    template = campaign.template
    skipped: dict[str, list[int]] = defaultdict(list)
    to_send: list[_Row] = []
    for row in rows:
        reason = _skip_reason(row, template, now)
        if reason:
            skipped[reason].append(row.id)
        else:
            to_send.append(row)
    for reason, ids in skipped.items():
        CampaignAudience.objects.filter(id__in=ids).update(
            state=CampaignAudience.State.SKIPPED, skip_reason=reason, updated_at=now
        )
    if not to_send:
        return len(rows), []
    conversations = _conversations_for(campaign, [row.contact_id for row in to_send])
    # Written `sending`: claimed by this sender, which hands them to the pipeline itself (a
    # sender that dies leaves them to the sweeper, which queues them again).
    created = rows_insert(
        Message,
        shared={
            "organization_id": campaign.organization_id,
            "channel_id": campaign.channel_id,
            "direction": Message.Direction.OUTBOUND,
            "provider": campaign.channel.provider,
            "type": Message.Type.TEMPLATE,
            "status": Status.SENDING,
            "queued_at": now,
            "priority": Message.Priority.LOW,
        },
        varying={
            "contact_id": [row.contact_id for row in to_send],
            "conversation_id": [conversations[row.contact_id] for row in to_send],
            "text": [_rendered_body(template, row.variables) for row in to_send],
            "content": [template_content(template, row.variables) for row in to_send],
        },
    )
    message_ids = [message_id for (message_id,) in created]
    _rows_link([row.id for row in to_send], message_ids, now)
    return len(rows), message_ids


def _rows_link(row_ids: list[int], message_ids: list[int], now: datetime) -> None:
    """Link each audience row to its message in one statement (bulk_update's CASE per row
    costs more than the rest of the chunk)."""
    if connection.vendor != "postgresql":  # the embedded default, SQLite
        for row_id, message_id in zip(row_ids, message_ids, strict=True):
            CampaignAudience.objects.filter(id=row_id).update(
                message_id=message_id, state=CampaignAudience.State.QUEUED, updated_at=now
            )
        return
    table = connection.ops.quote_name(CampaignAudience._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS row SET message_id = link.message_id, state = %s, "  # noqa: S608
            "updated_at = %s FROM unnest(%s::bigint[], %s::bigint[]) AS link(id, message_id) "
            "WHERE row.id = link.id",
            [CampaignAudience.State.QUEUED, now, row_ids, message_ids],
        )


def _conversations_for(campaign: Campaign, contact_ids: list[int]) -> dict[int, int]:
    """Each contact's conversation on the campaign's channel, created where there is none."""

    def existing() -> dict[int, int]:
        return dict(
            Conversation.objects.filter(
                channel_id=campaign.channel_id, contact_id__in=contact_ids
            ).values_list("contact_id", "id")
        )

    found = existing()
    missing = [contact_id for contact_id in contact_ids if contact_id not in found]
    if not missing:
        return found
    rows_insert(
        Conversation,
        shared={"organization_id": campaign.organization_id, "channel_id": campaign.channel_id},
        varying={"contact_id": missing},
        ignore_conflicts=True,  # an inbound message may open one at the same moment
    )
    return existing()


def _orphaned_message_ids(campaign_id: int) -> list[int]:
    """Queued messages of the campaign whose sender died before handing them on."""
    now = timezone.now()
    return list(
        Message.objects.filter(
            campaign_audience__campaign_id=campaign_id,
            status=Status.QUEUED,
            queued_at__lt=now - ORPHANED_AFTER,
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("id")
        .values_list("id", flat=True)[:CHUNK_MAX]
    )


def _failures_count(campaign_id: int, message_ids: list[int]) -> None:
    """Count failed sends in a row, in message order, reset by a success; pause at the
    campaign's threshold."""
    outcomes = list(
        Message.objects.filter(id__in=message_ids)
        .order_by("id")
        .values_list("status", "error_code")
    )
    delivered = {Status.SENT, Status.DELIVERED, Status.READ}
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update()
            .only("consecutive_failures", "failure_threshold", "status")
            .get(id=campaign_id)
        )
        failures = campaign.consecutive_failures
        last_code = ""
        for status, code in outcomes:
            # Send-time rules (opted out, frequency cap) say nothing of the channel's health.
            if status == Status.FAILED and code not in Message.SKIP_CODES:
                failures += 1
                last_code = code
            elif status in delivered:
                failures = 0
        if failures == campaign.consecutive_failures:
            return
        Campaign.objects.filter(id=campaign_id).update(consecutive_failures=failures)
    if failures >= campaign.failure_threshold and campaign.status == Campaign.Status.RUNNING:
        reason = f"Paused after {failures} failed sends in a row"
        _pause(campaign_id, f"{reason} (last error {last_code})." if last_code else f"{reason}.")


def _pause(campaign_id: int, reason: str) -> None:
    try:
        services.campaign_pause(campaign_id=campaign_id, reason=reason)
    except ValidationError:
        return  # paused, cancelled or completed meanwhile
    logger.warning("Campaign %s paused by its fan-out", campaign_id)


def campaign_complete_if_done(*, campaign_id: int) -> bool:
    """Complete a running campaign once no row is pending and no message is queued or sending."""
    if CampaignAudience.objects.filter(
        campaign_id=campaign_id, state=CampaignAudience.State.PENDING
    ).exists():
        return False
    if Message.objects.filter(
        campaign_audience__campaign_id=campaign_id, status__in=(Status.QUEUED, Status.SENDING)
    ).exists():
        return False
    if not Campaign.objects.filter(id=campaign_id, status=Campaign.Status.RUNNING).exists():
        return False
    try:
        services.campaign_complete(campaign_id=campaign_id)
    except ValidationError:
        return False  # another sender completed it, or it was paused or cancelled meanwhile
    logger.info("Campaign %s completed", campaign_id)
    return True


def stalled_fanouts_restart() -> list[int]:
    """Start again the fan-out of running campaigns that have work left and whose heartbeat
    stopped (a worker died, or a sender's task was lost). Returns their ids."""
    cutoff = timezone.now() - STALLED_AFTER
    restarted = []
    for campaign_id in Campaign.objects.filter(
        Q(fanout_heartbeat_at__isnull=True) | Q(fanout_heartbeat_at__lt=cutoff),
        status=Campaign.Status.RUNNING,
    ).values_list("id", flat=True):
        if campaign_complete_if_done(campaign_id=campaign_id):
            continue
        with transaction.atomic():
            fan_out_start(campaign_id=campaign_id)
        restarted.append(campaign_id)
        logger.info("Campaign %s: fan-out restarted", campaign_id)
    return restarted
