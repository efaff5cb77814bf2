from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from whatsapp_platform.models import Channel
from whatsapp_platform.services import channel_upsert

REQUIRED = {
    Channel.Provider.META: ("phone_number_id", "waba_id", "access_token", "app_secret"),
    Channel.Provider.TWILIO: ("account_sid", "auth_token", "sender"),
    Channel.Provider.CONSOLE: ("sender",),
}
FIELDS_BY_PROVIDER = {
    Channel.Provider.META: (
        "phone_number_id",
        "waba_id",
        "display_phone_number",
        "access_token",
        "app_secret",
        "webhook_verify_token",
    ),
    Channel.Provider.TWILIO: ("account_sid", "auth_token", "sender", "messaging_service_sid"),
    Channel.Provider.CONSOLE: ("sender",),
}


class Command(BaseCommand):
    help = (
        "Create an organization (if new) and a WhatsApp channel; run again with the same "
        "organization and number to update that channel."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--organization", required=True, help="Organization name.")
        parser.add_argument("--provider", required=True, choices=Channel.Provider.values)
        parser.add_argument("--name", default="", help="A label for the channel.")
        parser.add_argument("--phone-number-id", default="")
        parser.add_argument("--waba-id", default="")
        parser.add_argument("--display-phone-number", default="")
        parser.add_argument("--access-token", default="")
        parser.add_argument("--app-secret", default="")
        parser.add_argument("--verify-token", dest="webhook_verify_token", default="")
        parser.add_argument("--account-sid", default="")
        parser.add_argument("--auth-token", default="")
        parser.add_argument("--sender", default="", help="whatsapp:+E164")
        parser.add_argument(
            "--messaging-service-sid", default="", help="MG..., when the sender is in a pool."
        )
        parser.add_argument("--mps", type=int, default=None, help="Messages per second (80).")

    def handle(self, *args: Any, **options: Any) -> None:
        provider = Channel.Provider(options["provider"])
        fields = {name: options[name] for name in FIELDS_BY_PROVIDER[provider]}
        missing = [name for name in REQUIRED[provider] if not fields[name]]
        others = [
            name
            for provider_fields in FIELDS_BY_PROVIDER.values()
            for name in provider_fields
            if name not in fields and options[name]
        ]
        if others:
            raise CommandError(
                f"Not options of a {provider} channel: "
                + ", ".join("--" + n.replace("_", "-") for n in others)
            )
        if options["mps"] is not None:
            if options["mps"] < 1:
                raise CommandError("--mps must be at least 1.")
            fields["messages_per_second"] = options["mps"]
        if options["name"]:
            fields["name"] = options["name"]
        existing = Channel.objects.filter(
            organization__name=options["organization"],
            provider=provider,
            **(
                {"phone_number_id": fields["phone_number_id"]}
                if provider == Channel.Provider.META
                else {"sender": fields["sender"]}
            ),
        ).exists()
        if missing and not existing:
            raise CommandError(
                f"A {provider} channel needs "
                + ", ".join("--" + n.replace("_", "-") for n in missing)
            )
        try:
            channel, created = channel_upsert(
                organization_name=options["organization"], provider=provider, **fields
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} channel {channel.id}: {channel} ({provider}).")
