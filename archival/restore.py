"""Restore: archived rows back into the database, by key or by day, idempotently (by id).

A restored batch's object is removed once its rows are back, so that no row is both archived
and in the database; the next archival run archives the rows again if they are still due.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, cast

from django.apps import apps
from django.db import connection, models, transaction
from django.utils import timezone

from archival import metrics
from archival.models import ArchiveBatch, ArchiveRun
from archival.services import job_lock
from campaigns.models import CampaignAudience
from conversations.models import MediaAsset, Message
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.storage import ArchiveStorage, archive_storage

# Parents before the rows that point at them.
RESTORE_ORDER: tuple[type[models.Model], ...] = (
    Message,
    WebhookEvent,
    CampaignAudience,
    MediaAsset,
)
MODEL_BY_TABLE = {model._meta.db_table: model for model in RESTORE_ORDER}


def _relinked_model(table: str) -> type[models.Model]:
    """The model of a `relink` line: any row that pointed at an archived one (a reply, an AI
    reply, an analytics event)."""
    for model in apps.get_models():
        if model._meta.db_table == table:
            return model
    raise LookupError(f"No model has the table {table!r}.")


CHUNK = 1000


def archive_lines(storage: ArchiveStorage, key: str) -> Iterator[dict[str, Any]]:
    """The lines of an archive object, decoded one at a time."""
    with storage.open(key) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


@dataclass
class RestoreResult:
    keys: list[str] = field(default_factory=list)
    restored: int = 0
    already_present: int = 0
    skipped: int = 0  # rows whose contact, channel or organization no longer exists

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "restored": self.restored,
            "already_present": self.already_present,
            "skipped": self.skipped,
        }


Relinks = list[tuple[type[models.Model], dict[str, Any]]]


def _db_value(f: models.Field[Any, Any], row: dict[str, Any]) -> Any:
    missing = None if f.null else f.get_default()
    value = f.to_python(row[f.column]) if f.column in row else missing
    return f.get_db_prep_save(value, connection)


def _insert(
    model: type[models.Model], rows: list[dict[str, Any]], result: RestoreResult, relinks: Relinks
) -> None:
    """Insert rows that are not there yet; references to rows that are gone are cleared, or the
    row skipped when the reference is required."""
    if not rows:
        return
    # Empty columns are left out of the archive (and columns added since are missing).
    fields = list(model._meta.concrete_fields)
    ids = [row["id"] for row in rows]
    present = set(model._default_manager.filter(pk__in=ids).values_list("pk", flat=True))
    existing: dict[models.Field[Any, Any], set[Any]] = {}
    for f in fields:
        if f.is_relation:
            wanted = {row[f.column] for row in rows if row.get(f.column) is not None}
            found = set(
                f.related_model._default_manager.filter(pk__in=wanted).values_list("pk", flat=True)  # type: ignore[union-attr]
            )
            if f.related_model is model:
                found |= set(ids)
            existing[f] = found
    values = []
    for row in rows:
        if row["id"] in present:
            result.already_present += 1
            continue
        missing_required = False
        for fk, found in existing.items():
            if row.get(fk.column) is not None and row[fk.column] not in found:
                if fk.null:
                    # Set again at the end, should the target come back in a later object.
                    relinks.append(
                        (model, {"id": row["id"], "column": fk.column, "value": row[fk.column]})
                    )
                    row[fk.column] = None
                else:
                    missing_required = True
        if missing_required:
            result.skipped += 1
            continue
        values.append([_db_value(f, row) for f in fields])
    if not values:
        return
    columns = ", ".join(f'"{f.column}"' for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    with connection.cursor() as cursor:
        cursor.executemany(
            f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({placeholders}) '  # noqa: S608
            "ON CONFLICT (id) DO NOTHING",
            values,
        )
    result.restored += len(values)


def _relink(relinks: Relinks) -> None:
    """References cleared when their target was archived, set again where both rows exist."""
    for model, relink in relinks:
        column = relink["column"]
        field = next(f for f in model._meta.concrete_fields if f.column == column)
        target = cast("type[models.Model]", field.related_model)
        if not target._default_manager.filter(pk=relink["value"]).exists():
            continue
        model._default_manager.filter(pk=relink["id"], **{f"{column}__isnull": True}).update(
            **{column: relink["value"]}
        )


def _restore_key(
    storage: ArchiveStorage,
    key: str,
    result: RestoreResult,
    relinks: Relinks,
) -> None:
    batch = ArchiveBatch.objects.filter(key=key).first()
    if batch is not None and batch.state == ArchiveBatch.State.RESTORED:
        storage.purge(key)  # a restore that died before removing the object
        return
    if storage.size(key) is None:
        raise FileNotFoundError(f"No archive object {key}.")
    pending: dict[type[models.Model], list[dict[str, Any]]] = {m: [] for m in RESTORE_ORDER}
    with transaction.atomic():
        for line in archive_lines(storage, key):
            if "relink" in line:
                relinks.append((_relinked_model(line["table"]), line["relink"]))
                continue
            # A batch is bounded: ARCHIVE_BATCH_SIZE rows.
            pending[MODEL_BY_TABLE[line["table"]]].append(line["row"])
        for model in RESTORE_ORDER:
            for start in range(0, len(pending[model]), CHUNK):
                _insert(model, pending[model][start : start + CHUNK], result, relinks)
        if batch is not None:
            ArchiveBatch.objects.filter(id=batch.id).update(
                state=ArchiveBatch.State.RESTORED, updated_at=timezone.now()
            )
    result.keys.append(key)
    if batch is not None:
        storage.purge(key)


def restore_keys_for_days(first: date, last: date) -> list[str]:
    return list(
        ArchiveBatch.objects.filter(
            state=ArchiveBatch.State.STORED, day__gte=first, day__lte=last
        ).values_list("key", flat=True)
    )


def messages_restore(
    *, keys: Iterable[str], triggered_by: str = ArchiveRun.Trigger.COMMAND, progress: Any = None
) -> RestoreResult:
    """Put the rows of these archive objects back. Safe to run again."""
    result = RestoreResult()
    storage = archive_storage()
    run = ArchiveRun.objects.create(
        job_type=ArchiveRun.JobType.RESTORE,
        triggered_by=triggered_by,
        state=ArchiveRun.State.RUNNING,
        started_at=timezone.now(),
    )
    with job_lock(ArchiveRun.JobType.MESSAGES, wait=True):
        try:
            relinks: Relinks = []
            for key in keys:
                _restore_key(storage, key, result, relinks)
                if progress:
                    progress(1)
            _relink(relinks)
        except Exception as exc:
            ArchiveRun.objects.filter(id=run.id).update(
                state=ArchiveRun.State.FAILED,
                error=f"{type(exc).__name__}: {exc}"[:4000],
                finished_at=timezone.now(),
                report=result.as_dict(),
            )
            metrics.FAILURES.labels(run.job_type).inc()
            raise
    ArchiveRun.objects.filter(id=run.id).update(
        state=ArchiveRun.State.SUCCEEDED,
        rows_archived=result.restored,
        finished_at=timezone.now(),
        storage_keys=result.keys,
        report=result.as_dict(),
    )
    metrics.ROWS.labels(run.job_type).inc(result.restored)
    return result
