"""List, redrive or purge the dead letters of the work queues.

manage.py dead_letters list [--queue incoming]
manage.py dead_letters redrive (--all | --id ID ...) [--queue incoming]
manage.py dead_letters purge (--all | --id ID ...) [--queue incoming]
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from whatsapp_platform.monitoring import dead_letters


class Command(BaseCommand):
    help = "List the dead letters of the work queues, send them back to their queue, or purge them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=("list", "redrive", "purge"))
        parser.add_argument("--queue", help="Only this work queue's dead letters.")
        parser.add_argument("--id", action="append", dest="ids", help="An SQS message id.")
        parser.add_argument("--all", action="store_true", help="Every dead letter.")
        parser.add_argument("--json", action="store_true", help="List as JSON lines.")

    def handle(self, *args: Any, **options: Any) -> None:
        action, queue = options["action"], options["queue"]
        try:
            if action == "list":
                self._list(queue, as_json=options["json"])
                return
            if bool(options["ids"]) == bool(options["all"]):
                raise CommandError("Give either --id (one or more) or --all.")
            ids = None if options["all"] else options["ids"]
            if action == "redrive":
                count = dead_letters.dead_letters_redrive(queue=queue, ids=ids)
                self.stdout.write(f"Redrove {count} dead letter(s).")
            else:
                count = dead_letters.dead_letters_purge(queue=queue, ids=ids)
                self.stdout.write(f"Purged {count} dead letter(s).")
        except dead_letters.UnknownQueue as exc:
            raise CommandError(str(exc)) from exc

    def _list(self, queue: str | None, *, as_json: bool) -> None:
        letters = dead_letters.dead_letters_list(queue=queue)
        for letter in letters:
            if as_json:
                self.stdout.write(json.dumps(letter.as_dict()))
            else:
                self.stdout.write(
                    f"{letter.queue}\t{letter.id}\t{letter.task}[{letter.task_id}]\t"
                    f"{letter.arguments}\t{letter.error}"
                )
        if not as_json:
            self.stdout.write(f"{len(letters)} dead letter(s).")
