"""Many rows of one model that differ in a few columns, written in one statement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from django.db import connection, models
from django.utils import timezone


def rows_insert(
    model: type[models.Model],
    *,
    shared: dict[str, Any],
    varying: dict[str, list[Any]],
    returning: Sequence[str] = ("id",),
    ignore_conflicts: bool = False,
) -> list[tuple[Any, ...]]:
    """Insert one row per position of the `varying` lists (by attname); every other column
    takes its value from `shared`, or its default as `Model.save` would give it (`auto_now`
    times are now). Returns the `returning` columns of the inserted rows, in their order;
    with `ignore_conflicts`, rows that conflict are left out (on PostgreSQL) or nothing is
    returned (elsewhere).

    On PostgreSQL the shared values are sent once and the varying ones as one array per column
    (`INSERT ... SELECT ... FROM unnest(...)`): `bulk_create` prepares every value of every row
    in Python, which costs more than the insert itself.
    """
    sizes = {len(values) for values in varying.values()}
    if len(sizes) != 1:
        raise ValueError("The varying columns must hold one value per row each.")
    if not sizes.pop():
        return []
    if connection.vendor != "postgresql":
        return _rows_insert_orm(model, shared, varying, returning, ignore_conflicts)
    now = timezone.now()
    quote = connection.ops.quote_name
    columns: list[str] = []
    selected: list[str] = []
    constants: list[Any] = []
    arrays: list[str] = []
    values: list[list[Any]] = []
    for f in model._meta.concrete_fields:
        if f.primary_key and f.attname not in shared and f.attname not in varying:
            continue  # the sequence's
        db_type = f.db_type(connection)
        columns.append(quote(f.column))
        if f.attname in varying:
            given = varying[f.attname]
            if isinstance(f, models.JSONField):
                # As text: psycopg2 would send an array of Jsonb wrappers element by element.
                values.append([None if v is None else json.dumps(v, cls=f.encoder) for v in given])
                arrays.append("%s::text[]")
            else:
                values.append([f.get_db_prep_save(v, connection) for v in given])
                arrays.append(f"%s::{db_type}[]")
            selected.append(f"v{len(values)}::{db_type}")
            continue
        if f.attname in shared:
            value = shared[f.attname]
        elif getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            value = now
        else:
            value = f.get_default()
        constants.append(f.get_db_prep_save(value, connection))
        selected.append(f"%s::{db_type}")
    names = ", ".join(f"v{n}" for n in range(1, len(values) + 1))
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS u({names})"
    )
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    sql += " RETURNING " + ", ".join(
        quote(cast("models.Field[Any, Any]", model._meta.get_field(name)).column)
        for name in returning
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*constants, *values])
        return list(cursor.fetchall())


def _rows_insert_orm(
    model: type[models.Model],
    shared: dict[str, Any],
    varying: dict[str, list[Any]],
    returning: Sequence[str],
    ignore_conflicts: bool,
) -> list[tuple[Any, ...]]:
    rows = len(next(iter(varying.values())))
    objects = [
        model(**shared, **{name: values[n] for name, values in varying.items()})
        for n in range(rows)
    ]
    created = model._default_manager.bulk_create(objects, ignore_conflicts=ignore_conflicts)
    if ignore_conflicts:
        return []
    return [tuple(getattr(obj, name) for name in returning) for obj in created]
