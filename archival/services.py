"""Archival runs: old messages, webhook events and campaign audiences to archive storage.

A run reads its rows in keyset order, `(created_at, id)`, one bounded batch of one day at a time,
so memory stays flat whatever the table size. Each batch becomes one gzip JSON Lines object at
a deterministic key (kind, day, batch number). The batch is recorded `uploading` before the
upload; what is sent is counted and hashed, and the backend confirms it holds that object
(`ArchiveStorage.confirm`); then one transaction records it `stored` and deletes its rows. A run that dies anywhere leaves either an `uploading` batch, whose
object the next run removes before archiving those rows again under the same key, or a stored
batch whose rows are gone: never a row lost, in two archives, or both archived and in the
database.

Each line is `{"table": <db table>, "row": {column: value}}`: a message's line comes with the
lines of its media assets and of its campaign audience row, which go with it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, cast

import orjson
import psycopg2.extensions
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from archival import metrics
from archival.models import ArchiveBatch, ArchivedContact, ArchiveRun
from campaigns.models import Campaign, CampaignAudience
from conversations.models import Message
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.storage import ArchiveStorage, archive_storage
from whatsapp_platform.models import Organization

logger = logging.getLogger(__name__)

Heartbeat = Callable[[], None]
Progress = Callable[[int], object]

FINAL_CAMPAIGN_STATES = (Campaign.Status.COMPLETED, Campaign.Status.CANCELLED)
SPOOL_BYTES = 8 * 1024 * 1024  # a batch object bigger than this is spooled to a temp file


class ArchiveJobBusy(Exception):
    """A run of the same job is already pending or running."""

    def __init__(self, run: ArchiveRun) -> None:
        super().__init__(f"A {run.job_type} run is already {run.state} (run {run.id}).")
        self.run = run


class ArchiveVerificationError(Exception):
    """The object in storage is not the one written."""


# --- Locks and runs -----------------------------------------------------------------------------


@contextmanager
def job_lock(name: str, *, wait: bool = False) -> Iterator[bool]:
    """A PostgreSQL advisory lock per job: held by one process, released if it dies.

    Yields whether it was taken (always, with `wait`). Other databases run one worker.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    key = zlib.crc32(f"archival:{name}".encode())
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
            taken = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            taken = bool(cursor.fetchone()[0])
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextmanager
def _archive_session() -> Iterator[None]:
    """Session settings while a run works, reset after it.

    Batch reads of a few thousand rows: parallel workers cost more to start than they save.
    Commits need not wait for the WAL flush: a batch commit lost in a database crash comes back
    as it was before, `uploading` with its rows in place, which the next run settles like any
    interrupted batch.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET max_parallel_workers_per_gather")
            cursor.execute("RESET synchronous_commit")


def archive_run_create(
    *,
    job_type: str,
    triggered_by: str,
    dry_run: bool = False,
    older_than_days: int | None = None,
    batch_size: int | None = None,
    organization_id: int | None = None,
) -> ArchiveRun:
    """A new pending run. Raises ArchiveJobBusy when one of the same job is still active."""
    options: dict[str, Any] = {
        "older_than_days": older_than_days,
        "batch_size": batch_size,
        "organization_id": organization_id,
    }
    try:
        with transaction.atomic():
            return ArchiveRun.objects.create(
                job_type=job_type, triggered_by=triggered_by, dry_run=dry_run, options=options
            )
    except IntegrityError:
        active = ArchiveRun.objects.filter(
            job_type=job_type, state__in=ArchiveRun.ACTIVE_STATES
        ).first()
        if active is not None and not _run_abandoned(active):
            raise ArchiveJobBusy(active) from None
        # Finished in between, or superseded: try again.
        return archive_run_create(
            job_type=job_type,
            triggered_by=triggered_by,
            dry_run=dry_run,
            older_than_days=older_than_days,
            batch_size=batch_size,
            organization_id=organization_id,
        )


def _run_abandoned(run: ArchiveRun) -> bool:
    """A running run that no process holds the lock of was left by a process that died: it is
    marked failed (what it stored stays stored; what it left half-done the next run settles)."""
    if run.state != ArchiveRun.State.RUNNING:
        return False  # pending: its task is on its way
    with job_lock(run.job_type) as taken:
        if not taken:
            return False
        return bool(
            ArchiveRun.objects.filter(id=run.id, state=ArchiveRun.State.RUNNING).update(
                state=ArchiveRun.State.FAILED,
                error="Interrupted: the process working on it stopped.",
                finished_at=timezone.now(),
            )
        )


def archive_run_trigger(
    *, job_type: str, triggered_by: str, dry_run: bool = False, **options: Any
) -> ArchiveRun:
    """Create a run and enqueue its task once committed."""
    from archival.tasks import archive_media, archive_messages
    from whatsapp_platform.celery import enqueue_on_commit

    run = archive_run_create(
        job_type=job_type, triggered_by=triggered_by, dry_run=dry_run, **options
    )
    task = archive_messages if job_type == ArchiveRun.JobType.MESSAGES else archive_media
    enqueue_on_commit(task, run.id)
    return run


def archive_run_resume_or_trigger(*, job_type: str) -> ArchiveRun:
    """The scheduled start: a run left active by a dead worker is resumed, else a new one."""
    from archival.tasks import archive_media, archive_messages
    from whatsapp_platform.celery import enqueue_on_commit

    try:
        return archive_run_trigger(job_type=job_type, triggered_by=ArchiveRun.Trigger.SCHEDULE)
    except ArchiveJobBusy as busy:
        task = archive_messages if job_type == ArchiveRun.JobType.MESSAGES else archive_media
        enqueue_on_commit(task, busy.run.id)  # the lock keeps a live run from running twice
        return busy.run


def _run_begin(run: ArchiveRun) -> None:
    now = timezone.now()
    ArchiveRun.objects.filter(id=run.id).update(
        state=ArchiveRun.State.RUNNING, started_at=run.started_at or now
    )
    run.state = ArchiveRun.State.RUNNING
    run.started_at = run.started_at or now


def _run_finish(run: ArchiveRun, *, error: str = "") -> None:
    state = ArchiveRun.State.FAILED if error else ArchiveRun.State.SUCCEEDED
    ArchiveRun.objects.filter(id=run.id).update(
        state=state, error=error[:4000], finished_at=timezone.now(), report=run.report
    )
    run.refresh_from_db()
    if error:
        metrics.FAILURES.labels(run.job_type).inc()


# --- Which rows are due ---------------------------------------------------------------------


def _retention_q(
    *, date_field: str, org_field: str, default_days: int, organization_id: int | None
) -> Q:
    """Rows past their organization's retention; none of an organization on legal hold."""
    now = timezone.now()
    held = list(Organization.objects.filter(legal_hold=True).values_list("id", flat=True))
    custom = list(
        Organization.objects.filter(legal_hold=False, archive_after_days__isnull=False).values_list(
            "id", "archive_after_days"
        )
    )
    q = Q(**{f"{date_field}__lt": now - timedelta(days=default_days)}) & ~Q(
        **{f"{org_field}__in": held + [org_id for org_id, _ in custom]}
    )
    for org_id, days in custom:
        assert days is not None
        q |= Q(**{org_field: org_id, f"{date_field}__lt": now - timedelta(days=days)})
    if organization_id is not None:
        q &= Q(**{org_field: organization_id})
    return q


@dataclass(frozen=True)
class Source:
    """One kind of archived rows: where they are, how they are ordered, what goes with them."""

    kind: str
    model: type[models.Model]
    date_field: str
    file_prefix: str

    def due(self, *, default_days: int, organization_id: int | None) -> models.QuerySet[Any]:
        if self.model is Message:
            # Messages of a campaign still under way stay until it ends, for its figures.
            live_campaign = CampaignAudience.objects.filter(message_id=OuterRef("id")).exclude(
                campaign__status__in=FINAL_CAMPAIGN_STATES
            )
            return Message.objects.filter(
                _retention_q(
                    date_field="created_at",
                    org_field="organization_id",
                    default_days=default_days,
                    organization_id=organization_id,
                )
            ).exclude(Exists(live_campaign))
        if self.model is WebhookEvent:
            return WebhookEvent.objects.filter(
                _retention_q(
                    date_field="received_at",
                    org_field="organization_id",
                    default_days=default_days,
                    organization_id=organization_id,
                )
            )
        # Audience rows that never had a message (skipped), of campaigns that ended; the others
        # go with their message.
        return CampaignAudience.objects.filter(
            _retention_q(
                date_field="campaign__finished_at",
                org_field="campaign__organization_id",
                default_days=default_days,
                organization_id=organization_id,
            ),
            campaign__status__in=FINAL_CAMPAIGN_STATES,
            message__isnull=True,
        )


SOURCES = (
    Source(ArchiveBatch.Kind.MESSAGES, Message, "created_at", "messages"),
    Source(ArchiveBatch.Kind.WEBHOOK_EVENTS, WebhookEvent, "received_at", "webhook-events"),
    Source(
        ArchiveBatch.Kind.CAMPAIGN_AUDIENCE, CampaignAudience, "created_at", "campaign-audience"
    ),
)
SOURCE_BY_KIND = {source.kind: source for source in SOURCES}


def batch_key(source: Source, day: date, number: int) -> str:
    return (
        f"archived-messages/year={day:%Y}/month={day:%m}/day={day:%d}/"
        f"{source.file_prefix}-{day:%Y-%m-%d}-batch-{number:03d}.json.gz"
    )


def _references(model: type[models.Model]) -> list[tuple[type[models.Model], str, bool]]:
    """Rows that point at an archived row: (model, column, goes with it).

    A message's media assets (CASCADE) and campaign audience row go with it, into its batch;
    other references (a reply to an archived message, an AI reply, an analytics event) are left
    NULL. Every reference counts, those without a reverse accessor too: the database does not
    check them (see conversations.models.Message.reply_to), so archival must.
    """
    if model is not Message:
        return []
    found = []
    for rel in Message._meta.get_fields(include_hidden=True):
        if not (rel.auto_created and not rel.concrete and (rel.one_to_many or rel.one_to_one)):
            continue
        rel = cast("models.ForeignObjectRel", rel)
        related = cast("type[models.Model]", rel.related_model)
        if related is Message:
            found.append((related, rel.field.attname, False))
        elif rel.on_delete is models.CASCADE or related is CampaignAudience:
            found.append((related, rel.field.attname, True))
        elif rel.on_delete is models.SET_NULL:
            found.append((related, rel.field.attname, False))
    return found


def _dependents(model: type[models.Model]) -> list[tuple[type[models.Model], str]]:
    return [(related, column) for related, column, goes in _references(model) if goes]


def _nullified(model: type[models.Model]) -> list[tuple[type[models.Model], str]]:
    return [(related, column) for related, column, goes in _references(model) if not goes]


# --- Encoding -------------------------------------------------------------------------------


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.digest.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _id_array(ids: Iterable[int]) -> str:
    """Ids as one PostgreSQL array literal. psycopg2 would send a list as `ARRAY[1, 2, ...]`,
    which takes milliseconds per thousand ids to build (holding the GIL) and to parse."""
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def _among(column: str, ids: list[int]) -> tuple[str, list[Any]]:
    """`column` is one of `ids`: one array parameter on PostgreSQL, which parses and plans far
    faster than thousands of placeholders."""
    if connection.vendor == "postgresql":
        # As a subquery's value, not a constant: the planner would otherwise estimate each of
        # the thousands of ids in turn, which costs more than the statement itself.
        return f'"{column}" = ANY(((SELECT %s::bigint[]))::bigint[])', [_id_array(ids)]
    return f'"{column}" IN (' + ",".join(["%s"] * len(ids)) + ")", list(ids)


def _encode_default(o: Any) -> Any:
    # What orjson has no form for (Decimal, timedelta): as Django's JSON encoder writes it.
    return DjangoJSONEncoder().default(o)


# Column types PostgreSQL's to_json writes as this encoder would; integers are their own text
# (cheaper than to_json); others go as JSON strings of their text.
_INTEGER_TYPES = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "IntegerField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallAutoField",
    "SmallIntegerField",
}
_TO_JSON_TYPES = {
    "BooleanField",
    "CharField",
    "DateField",
    "DateTimeField",
    "EmailField",
    "SlugField",
    "TextField",
    "URLField",
    "UUIDField",
}


def _sql_kind(field: models.Field[Any, Any]) -> str:
    if isinstance(field, models.JSONField):
        return "json"
    target = field.target_field if field.is_relation else field  # type: ignore[attr-defined]
    kind = target.get_internal_type()
    if kind in _INTEGER_TYPES:
        return "integer"
    return "to_json" if kind in _TO_JSON_TYPES else "text"


@dataclass(frozen=True)
class RowShape:
    """How a table's rows are written as tagged JSON lines:
    `{"table": ..., "row": {column: value}}`, NULL columns left out.

    On PostgreSQL the database writes each line itself (`line_sql`), the way COPY writes its
    text: building them in Python from decoded rows costs several times more. Elsewhere rows
    are read as tuples and encoded here (`lines`). JSON columns go through as their text,
    unparsed, either way.
    """

    table: str
    columns: tuple[str, ...]
    # How PostgreSQL writes each column's JSON value: "json" (its own text), "integer" (its
    # text), "to_json", or "text" (a JSON string of its text, as a decimal is written here).
    sql_kinds: tuple[str, ...]

    @classmethod
    def of(cls, model: type[models.Model]) -> RowShape:
        fields = model._meta.concrete_fields
        return cls(
            table=model._meta.db_table,
            columns=tuple(f.column for f in fields),
            sql_kinds=tuple(_sql_kind(f) for f in fields),
        )

    def _prefix(self) -> bytes:
        return b'{"table":' + orjson.dumps(self.table) + b',"row":'

    def line_sql(self, alias: str) -> str:
        """The line as a PostgreSQL text expression. `concat_ws` skips NULLs, and a NULL column
        makes its `"name":value` part NULL, so empty columns are left out as in `lines`."""
        parts = []
        for column, kind in zip(self.columns, self.sql_kinds, strict=True):
            value = f'{alias}."{column}"'
            value = {
                "json": f"{value}::text",
                "integer": f"{value}::text",
                "to_json": f"to_json({value})::text",
                "text": f"to_json({value}::text)::text",
            }[kind]
            parts.append(f"'{orjson.dumps(column).decode()}:' || {value}")
        # concat_ws takes at most 100 arguments: wide tables are joined in groups.
        groups = [
            f"concat_ws(',', {', '.join(parts[n : n + 90])})" for n in range(0, len(parts), 90)
        ]
        joined = groups[0] if len(groups) == 1 else f"concat_ws(',', {', '.join(groups)})"
        return f"'{self._prefix().decode()}{{' || {joined} || '}}}}'"

    def expressions(self, alias: str) -> list[str]:
        return [f'{alias}."{column}"' for column in self.columns]

    def lines(self, rows: list[tuple[Any, ...]]) -> list[bytes]:
        """The lines of rows read as `expressions` (databases other than PostgreSQL)."""
        prefix = self._prefix()
        columns, fragment = self.columns, orjson.Fragment
        positions = [i for i, kind in enumerate(self.sql_kinds) if kind == "json"]
        lines = []
        for row in rows:
            if positions:
                values = list(row)
                for i in positions:
                    if values[i] is not None:
                        values[i] = fragment(values[i])
                row = tuple(values)
            encoded = orjson.dumps(
                {c: v for c, v in zip(columns, row, strict=True) if v is not None},
                default=_encode_default,
                option=orjson.OPT_NAIVE_UTC,  # the connection's time zone is UTC
            )
            lines.append(prefix + encoded + b"}")
        return lines


def _fetch_bytes(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Rows with their text columns as UTF-8 bytes, as they come from PostgreSQL: lines are
    written out as bytes, so decoding them to str first would be work thrown away."""
    with connection.cursor() as cursor:
        psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cursor.cursor)
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _json_lines(model: type[models.Model], column: str, ids: list[int], order: str) -> list[bytes]:
    """The rows whose `column` is in `ids`, as tagged JSON lines, in `order`."""
    if not ids:
        return []
    shape = RowShape.of(model)
    among, params = _among(column, ids)
    if connection.vendor == "postgresql":
        line = shape.line_sql("t")
        sql = f'SELECT {line} FROM "{shape.table}" t WHERE t.{among} ORDER BY {order}'  # noqa: S608
        return [row[0] for row in _fetch_bytes(sql, params)]
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT {", ".join(shape.expressions("t"))} FROM "{shape.table}" t '  # noqa: S608
            f"WHERE t.{among} ORDER BY {order}",
            params,
        )
        return shape.lines(cursor.fetchall())


def _relink_lines(source: Source, ids: list[int]) -> list[bytes]:
    """References from rows that stay (a reply to an archived message) are cleared when the
    batch is deleted: they are kept as `relink` lines, which a restore applies again."""
    lines = []
    wanted = set(ids)
    for model, column in _nullified(source.model):
        among, params = _among(column, ids)
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT id, "{column}" FROM "{model._meta.db_table}" WHERE {among}',  # noqa: S608
                params,
            )
            rows = cursor.fetchall()
        for row_id, value in rows:
            # A reply archived in the same batch keeps its link in its own line.
            if model is not source.model or row_id not in wanted:
                relink = {"id": row_id, "column": column, "value": value}
                lines.append(json.dumps({"table": model._meta.db_table, "relink": relink}).encode())
    return lines


@dataclass
class EncodedBatch:
    spool: IO[bytes]
    size: int
    sha256: str


@dataclass
class FetchedBatch:
    """A batch's lines, read from the database; `has_audience` when campaign rows go with it."""

    source: Source
    day: date
    ids: list[int]
    lines: list[bytes]
    has_audience: bool
    batch: ArchiveBatch | None = None
    contact_ids: set[int] = field(default_factory=set)


def _fetch(source: Source, found: FoundBatch) -> FetchedBatch:
    day, ids = found.day, found.ids
    order = f't."{source.date_field}", t.id'
    lines = found.lines if found.lines is not None else _json_lines(source.model, "id", ids, order)
    has_audience = source.model is CampaignAudience
    for model, column in _dependents(source.model):
        dependent = _json_lines(model, column, ids, "t.id")
        has_audience = has_audience or (model is CampaignAudience and bool(dependent))
        lines += dependent
    lines += _relink_lines(source, ids)
    return FetchedBatch(source, day, ids, lines, has_audience, contact_ids=found.contact_ids)


def _compress(lines: list[bytes], level: int) -> EncodedBatch:
    """gzip JSON Lines into a spooled file, hashed as written."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # type: ignore[assignment]  # noqa: SIM115
    writer = _HashingWriter(spool)
    with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=level, mtime=0) as gz:  # type: ignore[arg-type]
        gz.write(b"\n".join(lines) + b"\n")
    spool.seek(0)
    return EncodedBatch(spool, writer.size, writer.digest.hexdigest())


def _upload_verify(storage: ArchiveStorage, key: str | None, encoded: EncodedBatch) -> EncodedBatch:
    """Upload a compressed batch (unless a dry run, without key) and read the object back."""
    if key is None:
        encoded.spool.close()
        return encoded
    with encoded.spool:
        sent = storage.put_stream(key, encoded.spool, content_type="application/gzip")
    # What was sent is what was compressed, and the backend holds it (see `confirm`).
    if sent.size != encoded.size or sent.sha256 != encoded.sha256 or not storage.confirm(sent):
        raise ArchiveVerificationError(f"The archive object {key} does not match what was written.")
    return encoded


# --- One batch ------------------------------------------------------------------------------


@dataclass
class RunState:
    run: ArchiveRun
    storage: ArchiveStorage
    batch_size: int
    default_days: int
    organization_id: int | None
    level: int
    deadline: float
    heartbeat: Heartbeat | None
    progress: Progress | None
    uploads: int = 0


@dataclass
class FoundBatch:
    day: date
    ids: list[int]
    contact_ids: set[int]
    position: list[Any]
    lines: list[bytes] | None  # encoded from the same read (PostgreSQL)


def _next_batch(
    state: RunState, source: Source, after: list[Any] | None, day: date | None = None
) -> FoundBatch | None:
    """The next batch of due rows of one day, after the keyset position `after`.

    `day` is the day the previous batch filled up on: the rows after it are most likely that
    day's too, so they are read without first asking which day comes next.
    """
    qs = source.due(default_days=state.default_days, organization_id=state.organization_id)
    f = source.date_field
    if after is not None:
        at = datetime.fromisoformat(after[0])
        # The lower bound is an index condition: rows already passed are not scanned again.
        qs = qs.filter(**{f"{f}__gte": at}).filter(
            Q(**{f"{f}__gt": at}) | Q(**{f: at, "id__gt": after[1]})
        )
    if day is not None:
        found = _read_day(state, source, qs, day)
        if found is not None:
            return found
    first = qs.order_by(f, "id").values_list(f, flat=True).first()
    if first is None:
        return None
    return _read_day(state, source, qs, first.astimezone(UTC).date())


def _read_day(
    state: RunState, source: Source, qs: models.QuerySet[Any], day: date
) -> FoundBatch | None:
    """Up to a batch of `qs`'s rows of `day`, in keyset order: one day per object."""
    f = source.date_field
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    qs = qs.filter(**{f"{f}__lt": day_end}).order_by(f, "id")
    # The contacts whose rows the batch holds, for erasure (events name none).
    names = ["id", f] if source.model is WebhookEvent else ["id", f, "contact_id"]
    if connection.vendor == "postgresql":
        # One read: the batch's lines, written by the database, with what the run needs.
        shape = RowShape.of(source.model)
        column = cast("models.Field[Any, Any]", source.model._meta.get_field(f)).column
        query = qs.annotate(
            archive_at=RawSQL(f'to_json("{shape.table}"."{column}")::text', []),  # noqa: S611 (names from the model)
            archive_line=RawSQL(shape.line_sql(f'"{shape.table}"'), []),  # noqa: S611
        ).values_list("archive_line", "id", "archive_at", *names[2:])[: state.batch_size]
        sql, params = query.query.sql_with_params()
        rows = _fetch_bytes(sql, params)
        if not rows:
            return None
        lines: list[bytes] | None = [row[0] for row in rows]
        ids = [row[1] for row in rows]
        position = [orjson.loads(rows[-1][2]), rows[-1][1]]
        contacts = {row[3] for row in rows} if len(names) > 2 else set()
    else:
        plain = list(qs.values_list(*names)[: state.batch_size])
        if not plain:
            return None
        lines = None
        ids = [row[0] for row in plain]
        position = [plain[-1][1].isoformat(), plain[-1][0]]
        contacts = {row[2] for row in plain} if len(names) > 2 else set()
    return FoundBatch(day, ids, contacts, position, lines)


def _keep_campaign_figures(source: Source, ids: list[int]) -> None:
    """A campaign's final figures are computed and kept before its rows leave."""
    from campaigns.stats import campaign_stats_compute

    rows = Q(audience__message_id__in=ids) if source.model is Message else Q(audience__id__in=ids)
    campaigns = Campaign.objects.filter(rows, final_stats={}).distinct()
    for campaign in campaigns:
        Campaign.objects.filter(id=campaign.id).update(
            final_stats=campaign_stats_compute(campaign=campaign), updated_at=timezone.now()
        )


def _delete_rows(source: Source, ids: list[int]) -> int:
    """Delete the batch's rows, then what goes with them, then clear references to them.

    The rows first: a transaction that links one of them holds it locked until it commits
    (conversations.selectors.message_locked_for_link), so the delete waits for it, and each
    later statement, with a snapshot of its own, sees that link and clears it.
    """
    with connection.cursor() as cursor:
        among, params = _among("id", ids)
        cursor.execute(f'DELETE FROM "{source.model._meta.db_table}" WHERE {among}', params)  # noqa: S608
        deleted = int(cursor.rowcount)
        for model, column in _dependents(source.model):
            among, params = _among(column, ids)
            cursor.execute(f'DELETE FROM "{model._meta.db_table}" WHERE {among}', params)  # noqa: S608
        for model, column in _nullified(source.model):
            among, params = _among(column, ids)
            cursor.execute(
                f'UPDATE "{model._meta.db_table}" SET "{column}" = NULL WHERE {among}',  # noqa: S608
                params,
            )
        return deleted


def _record_contacts(batch: ArchiveBatch, contact_ids: set[int]) -> None:
    if not contact_ids:
        return
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f'INSERT INTO "{ArchivedContact._meta.db_table}" (batch_id, contact_id) '
                "SELECT %s, unnest(%s::bigint[])",
                [batch.id, _id_array(sorted(contact_ids))],
            )
        return
    ArchivedContact.objects.bulk_create(
        [ArchivedContact(batch=batch, contact_id=contact_id) for contact_id in contact_ids]
    )


def _pause_for_crash_test(key: str) -> None:
    # Fault injection (ARCHIVE_PAUSE_AFTER_UPLOADS): the test kills the process here.
    logger.warning("ARCHIVE_PAUSED after upload %s", key)
    print(f"ARCHIVE_PAUSED {key}", flush=True)  # noqa: T201
    while True:
        time.sleep(1)


def _batch_begin(state: RunState, fetched: FetchedBatch) -> str | None:
    """Record the batch `uploading` (committed) and return its key; None in a dry run."""
    if state.run.dry_run:
        return None
    source, day = fetched.source, fetched.day
    number = (
        ArchiveBatch.objects.filter(kind=source.kind, day=day).aggregate(n=models.Max("number"))[
            "n"
        ]
        or 0
    ) + 1
    key = batch_key(source, day, number)
    fetched.batch = ArchiveBatch.objects.create(
        run=state.run, kind=source.kind, day=day, number=number, key=key
    )
    return key


def _batch_finish(state: RunState, fetched: FetchedBatch, encoded: EncodedBatch) -> None:
    """The object is verified: record the batch stored and delete its rows, in one transaction."""
    run, ids, source = state.run, fetched.ids, fetched.source
    if run.dry_run:
        days = run.report.setdefault("days", {})
        entry = days.setdefault(fetched.day.isoformat(), {})
        entry[source.kind] = entry.get(source.kind, 0) + len(ids)
        entry["bytes"] = entry.get("bytes", 0) + encoded.size
        run.report["rows"] = run.report.get("rows", 0) + len(ids)
        run.report["bytes_estimate"] = run.report.get("bytes_estimate", 0) + encoded.size
        return
    batch = fetched.batch
    assert batch is not None
    state.uploads += 1
    if (
        settings.ARCHIVE_PAUSE_AFTER_UPLOADS
        and state.uploads >= settings.ARCHIVE_PAUSE_AFTER_UPLOADS
    ):
        _pause_for_crash_test(batch.key)
    with transaction.atomic():
        updated = ArchiveBatch.objects.filter(
            id=batch.id, state=ArchiveBatch.State.UPLOADING
        ).update(
            state=ArchiveBatch.State.STORED,
            row_count=len(ids),
            size=encoded.size,
            sha256=encoded.sha256,
            first_id=min(ids),
            last_id=max(ids),
            updated_at=timezone.now(),
        )
        if updated != 1:
            raise ArchiveVerificationError(f"Batch {batch.key} was settled by another run.")
        _record_contacts(batch, fetched.contact_ids)
        if fetched.has_audience:
            _keep_campaign_figures(source, ids)
        deleted = _delete_rows(source, ids)
        ArchiveRun.objects.filter(id=run.id).update(
            rows_archived=F("rows_archived") + len(ids),
            rows_deleted=F("rows_deleted") + deleted,
            objects_written=F("objects_written") + 1,
            bytes_written=F("bytes_written") + encoded.size,
        )
    metrics.ROWS.labels(run.job_type).inc(len(ids))
    metrics.OBJECTS.labels(run.job_type).inc()
    metrics.BYTES.labels(run.job_type).inc(encoded.size)


def archive_batches_settle(storage: ArchiveStorage | None = None) -> int:
    """Remove what dead runs left: objects of batches never confirmed, and of restored ones.

    Their rows are in the database, so these objects must not stay. Returns the number settled.
    """
    storage = storage or archive_storage()
    settled = 0
    for batch in ArchiveBatch.objects.exclude(state=ArchiveBatch.State.STORED):
        storage.purge(batch.key)
        if batch.state == ArchiveBatch.State.UPLOADING:
            batch.delete()  # its number, and so its key, is used again for the same rows
        settled += 1
    return settled


# --- The run --------------------------------------------------------------------------------


def archive_messages_run(
    *,
    run_id: int,
    budget_seconds: float | None = None,
    heartbeat: Heartbeat | None = None,
    progress: Progress | None = None,
) -> bool:
    """Work on a messages run until it is done or the budget is spent. Returns True when the
    run needs no more work (done, failed, or being worked on by another process)."""
    with job_lock(ArchiveRun.JobType.MESSAGES) as taken:
        if not taken:
            return True
        run = ArchiveRun.objects.filter(id=run_id, state__in=ArchiveRun.ACTIVE_STATES).first()
        if run is None:
            return True
        _run_begin(run)
        started = time.monotonic()
        options = run.options or {}
        state = RunState(
            run=run,
            storage=archive_storage(),
            batch_size=options.get("batch_size") or settings.ARCHIVE_BATCH_SIZE,
            default_days=options.get("older_than_days") or settings.ARCHIVE_THRESHOLD_DAYS,
            organization_id=options.get("organization_id"),
            level=settings.ARCHIVE_GZIP_LEVEL,
            deadline=started + budget_seconds if budget_seconds else float("inf"),
            heartbeat=heartbeat,
            progress=progress,
        )
        try:
            if not run.dry_run:
                archive_batches_settle(state.storage)
            with _archive_session():
                done = _archive_sources(state)
        except Exception as exc:
            logger.exception("Archive run %s failed", run.id)
            _run_finish(run, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            metrics.DURATION.labels(run.job_type).observe(time.monotonic() - started)
        if done:
            _run_finish(run)
        else:
            ArchiveRun.objects.filter(id=run.id).update(report=run.report)
        return done


def _own_connection_session() -> None:
    # The batch thread's own connection, set as the run's (see `_archive_session`).
    with connection.cursor() as cursor:
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        cursor.execute("SET synchronous_commit = off")


def _own_connection_close() -> None:
    connection.close()  # looked up in the batch thread: its own connection


def _batch_compress(fetched: FetchedBatch, level: int) -> EncodedBatch:
    encoded = _compress(fetched.lines, level)
    fetched.lines = []  # its memory back before the batch settles
    return encoded


def _batch_tail(
    state: RunState,
    fetched: FetchedBatch,
    key: str | None,
    compressed: Future[EncodedBatch],
    commit: bool,
) -> EncodedBatch:
    """Upload and confirm a batch once compressed; with `commit`, also record it stored and
    delete its rows, on this thread's own connection."""
    encoded = compressed.result()
    _upload_verify(state.storage, key, encoded)
    if commit:
        _batch_finish(state, fetched, encoded)
    return encoded


# Batches between their read and their settling: one being compressed, one being uploaded and
# deleted, while the next is read.
IN_FLIGHT_BATCHES = 2


def _archive_sources(state: RunState) -> bool:
    """Batch after batch, in three stages that overlap: this thread reads a batch while the one
    before is compressed in a second thread (zlib releases the GIL) and the one before that is
    uploaded, confirmed and (where a second connection can see the run's rows) deleted and
    committed in a third. Each batch's rows are deleted once its object is confirmed, and
    batches settle in order, so the run's keyset position only moves past stored batches."""
    run = state.run
    positions: dict[str, Any] = run.report.setdefault("positions", {})
    in_flight: deque[tuple[FetchedBatch, Future[EncodedBatch], Any]] = deque()
    # A second connection sees only committed rows: not those of an enclosing transaction.
    threaded = (
        connection.vendor == "postgresql" and not connection.in_atomic_block and not run.dry_run
    )

    def settle(keep: int = 0) -> None:
        while len(in_flight) > keep:
            fetched, future, position = in_flight.popleft()
            encoded = future.result()
            if not threaded:
                _batch_finish(state, fetched, encoded)
            positions[fetched.source.kind] = position
            if state.progress:
                state.progress(len(fetched.ids))
            if state.heartbeat:
                state.heartbeat()

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-compress") as compressor,
        ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="archive-batch",
            initializer=_own_connection_session if threaded else None,
        ) as tails,
    ):
        try:
            for source in SOURCES:
                if positions.get(source.kind) == "done":
                    continue
                after = positions.get(source.kind)
                full_day: date | None = None
                while True:
                    if time.monotonic() > state.deadline:
                        settle()
                        return False
                    found = _next_batch(state, source, after, full_day)
                    if found is None:
                        settle()
                        positions[source.kind] = "done"
                        break
                    after = found.position
                    full_day = found.day if len(found.ids) == state.batch_size else None
                    fetched = _fetch(source, found)
                    key = _batch_begin(state, fetched)
                    compressed = compressor.submit(_batch_compress, fetched, state.level)
                    tail = tails.submit(_batch_tail, state, fetched, key, compressed, threaded)
                    in_flight.append((fetched, tail, after))
                    settle(keep=IN_FLIGHT_BATCHES)
        finally:
            for _, future, _ in in_flight:
                future.cancel()
            if threaded:
                tails.submit(_own_connection_close)
    return True


def archive_messages_preview(
    *, older_than_days: int | None = None, organization_id: int | None = None
) -> dict[str, int]:
    """How many rows of each kind are due now (for a progress bar's total)."""
    days = older_than_days or settings.ARCHIVE_THRESHOLD_DAYS
    return {
        source.kind: source.due(default_days=days, organization_id=organization_id).count()
        for source in SOURCES
    }


def dumps_report(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True)
