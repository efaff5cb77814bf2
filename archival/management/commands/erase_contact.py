from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from archival.erasure import ErasureRefused, contact_erase
from conversations.models import Contact


class Command(BaseCommand):
    help = (
        "Erase one contact: messages, media, conversations and events, from the database and "
        "from the archive objects that hold them. Prints what was removed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("contact_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        with tqdm(total=1, unit="contact", disable=None) as bar:
            try:
                report = contact_erase(contact_id=options["contact_id"])
            except Contact.DoesNotExist:
                raise CommandError(f"No contact {options['contact_id']}.") from None
            except ErasureRefused as exc:
                raise CommandError(str(exc)) from None
            bar.update(1)
        self.stdout.write(json.dumps(report.as_dict(), indent=2))
