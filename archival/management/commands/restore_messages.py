from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from archival.restore import messages_restore, restore_keys_for_days


class Command(BaseCommand):
    help = "Put archived rows back into the database, by key or by day range. Safe to repeat."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--key", action="append", default=[], help="An archive object key.")
        parser.add_argument("--from", dest="first", type=date.fromisoformat, metavar="YYYY-MM-DD")
        parser.add_argument("--to", dest="last", type=date.fromisoformat, metavar="YYYY-MM-DD")

    def handle(self, *args: Any, **options: Any) -> None:
        keys = list(options["key"])
        if options["first"] or options["last"]:
            first = options["first"] or date.min
            last = options["last"] or date.max
            if first > last:
                raise CommandError("--from is after --to.")
            keys += restore_keys_for_days(first, last)
        if not keys:
            raise CommandError("Nothing to restore: give --key, or --from and --to.")
        with tqdm(total=len(keys), unit="objects", disable=None) as bar:
            try:
                result = messages_restore(keys=keys, progress=bar.update)
            except FileNotFoundError as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result.as_dict(), indent=2))
