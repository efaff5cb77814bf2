"""Send a correctly signed provider webhook for a channel to a running server."""

from __future__ import annotations

import json
import secrets
import time
from argparse import ArgumentParser
from typing import Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webhooks.signature import meta_signature, twilio_signature
from whatsapp_platform.models import Channel


def meta_body(channel: Channel, options: dict[str, Any]) -> dict[str, Any]:
    now = str(int(time.time()))
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": channel.display_phone_number,
            "phone_number_id": channel.phone_number_id,
        },
    }
    if options["kind"] == "status":
        value["statuses"] = [
            {
                "id": options["message_id"],
                "status": options["status"],
                "timestamp": now,
                "recipient_id": options["sender"],
            }
        ]
    else:
        message: dict[str, Any] = {
            "from": options["sender"],
            "id": "wamid.SIM" + secrets.token_hex(16).upper(),
            "timestamp": now,
        }
        if options["kind"] == "button":
            message |= {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "simulated", "title": options["text"]},
                },
            }
        else:
            message |= {"type": "text", "text": {"body": options["text"]}}
        value["contacts"] = [{"profile": {"name": options["name"]}, "wa_id": options["sender"]}]
        value["messages"] = [message]
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": channel.waba_id, "changes": [{"field": "messages", "value": value}]}],
    }


def twilio_params(channel: Channel, options: dict[str, Any]) -> dict[str, str]:
    sid = "SM" + secrets.token_hex(16)
    customer = f"whatsapp:+{options['sender']}"
    if options["kind"] == "status":
        return {
            "AccountSid": channel.account_sid,
            "MessageSid": options["message_id"],
            "SmsSid": options["message_id"],
            "MessageStatus": options["status"],
            "SmsStatus": options["status"],
            "From": channel.sender,
            "To": customer,
            "ApiVersion": "2010-04-01",
        }
    params = {
        "AccountSid": channel.account_sid,
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "From": customer,
        "To": channel.sender,
        "WaId": options["sender"],
        "ProfileName": options["name"],
        "Body": options["text"],
        "NumMedia": "0",
        "MessageType": "text",
        "ApiVersion": "2010-04-01",
    }
    if options["kind"] == "button":
        params |= {
            "MessageType": "button",
            "ButtonText": options["text"],
            "ButtonPayload": "simulated",
        }
    return params


class Command(BaseCommand):
    help = (
        "Send a signed webhook (a text, a button reply or a status) for a Meta or Twilio "
        "channel to a running server, as the provider would."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--channel", type=int, required=True, help="Channel id.")
        parser.add_argument("--kind", choices=("text", "button", "status"), default="text")
        parser.add_argument("--text", default="Hello! Is my order on its way?")
        parser.add_argument("--sender", default="15550001234", help="Customer number (digits).")
        parser.add_argument("--name", default="Test Customer", help="Customer profile name.")
        parser.add_argument("--message-id", default="", help="Our message id (for --kind status).")
        parser.add_argument("--status", default="delivered", help="For --kind status.")
        parser.add_argument(
            "--url", default=settings.PUBLIC_BASE_URL, help="The server (PUBLIC_BASE_URL)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        channel = Channel.objects.filter(id=options["channel"]).first()
        if channel is None:
            raise CommandError(f"There is no channel {options['channel']}.")
        if options["kind"] == "status" and not options["message_id"]:
            raise CommandError("--kind status needs --message-id (the provider id of our message).")
        base = options["url"].rstrip("/")
        if channel.provider == Channel.Provider.META:
            if not channel.app_secret:
                raise CommandError("The channel has no app secret to sign with.")
            body = json.dumps(meta_body(channel, options), separators=(",", ":")).encode()
            url = f"{base}/webhooks/meta/"
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": meta_signature(body, channel.app_secret),
            }
        elif channel.provider == Channel.Provider.TWILIO:
            params = twilio_params(channel, options)
            path = (
                "/webhooks/twilio/status/"
                if options["kind"] == "status"
                else "/webhooks/twilio/inbound/"
            )
            url = base + path
            # Twilio signs the URL it is configured with: the public one.
            signed_url = settings.PUBLIC_BASE_URL + path
            body = urlencode(params).encode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signature(signed_url, params, channel.auth_token),
            }
        else:
            raise CommandError("Only Meta and Twilio channels receive webhooks.")
        try:
            response = requests.post(url, data=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            raise CommandError(f"Could not reach {url}: {exc}") from exc
        if response.status_code != 200:
            raise CommandError(f"{url} answered {response.status_code}: {response.text[:300]}")
        self.stdout.write(f"Delivered a signed {options['kind']} webhook to {url} (200).")
