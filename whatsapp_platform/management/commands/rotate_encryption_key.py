"""Re-encrypt every encrypted column with the first key of FIELD_ENCRYPTION_KEY."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandParser
from django.db import models, transaction
from django.db.models.functions import Cast

from whatsapp_platform.lib.fields import EncryptedTextField, is_current, reencrypt


def encrypted_columns() -> list[tuple[type[models.Model], list[str]]]:
    columns = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            columns.append((model, names))
    return columns


def rotate_model(model: type[models.Model], names: list[str], batch_size: int) -> tuple[int, int]:
    """Re-encrypt one model's tokens batch by batch, in primary-key order.

    Returns (values re-encrypted, values already under the first key). Tokens are read and
    written as raw text (a Cast, and a plain-text Value) so they are never decrypted here.
    """
    rotated = current = 0
    last_pk: Any = None
    raw = {f"raw_{name}": Cast(name, models.TextField()) for name in names}
    while True:
        with transaction.atomic():
            rows = model._default_manager.order_by("pk").select_for_update()
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            batch = list(rows.annotate(**raw).values("pk", *raw)[:batch_size])
            for row in batch:
                changes = {}
                for name in names:
                    token = row[f"raw_{name}"]
                    if not token:
                        continue
                    if is_current(token):
                        current += 1
                    else:
                        changes[name] = models.Value(reencrypt(token), models.TextField())
                if changes:
                    model._default_manager.filter(pk=row["pk"]).update(**changes)
                    rotated += len(changes)
        if len(batch) < batch_size:
            return rotated, current
        last_pk = batch[-1]["pk"]


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted column with the first key of FIELD_ENCRYPTION_KEY, in "
        "batches. Put the new key first, run this, then remove the old key. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model, names in encrypted_columns():
            rotated, current = rotate_model(model, names, options["batch_size"])
            total += rotated
            self.stdout.write(
                f"{model._meta.label}: {rotated} re-encrypted, {current} already current"
            )
        self.stdout.write(f"Done: {total} value(s) re-encrypted.")
