"""Sync message templates from the providers now, for one channel or every active one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from campaigns.template_sync import channel_templates_sync, syncable_channel_ids
from whatsapp_platform.lib.providers.errors import ProviderRetryableError
from whatsapp_platform.models import Channel


class Command(BaseCommand):
    help = "Copy the message templates and their approval status from Meta and Twilio."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channel", type=int, help="The id of the channel to sync.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["channel"] is not None:
            channel = Channel.objects.filter(id=options["channel"]).first()
            if channel is None:
                raise CommandError(f"No channel has id {options['channel']}.")
            channel_ids = [channel.id]
        else:
            channel_ids = syncable_channel_ids()
        failed = 0
        for channel_id in channel_ids:
            try:
                result = channel_templates_sync(channel_id=channel_id)
            except ProviderRetryableError as exc:
                self.stderr.write(f"channel {channel_id}: {exc} (try again later)")
                failed += 1
                continue
            if result.error:
                self.stderr.write(str(result))
                failed += 1
            else:
                self.stdout.write(str(result))
        if failed:
            raise CommandError(f"{failed} of {len(channel_ids)} channel(s) could not be synced.")
