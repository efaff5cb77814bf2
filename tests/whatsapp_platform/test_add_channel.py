"""`add_channel` sets up an organization and its channel from a script, and updates on re-run."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from whatsapp_platform.models import Channel, Organization

pytestmark = pytest.mark.django_db

META = [
    "--organization", "Acme",
    "--provider", "meta",
    "--phone-number-id", "106540352242922",
    "--waba-id", "102290129340398",
    "--display-phone-number", "15550783881",
    "--access-token", "EAAG-token",
    "--app-secret", "app-secret",
    "--verify-token", "verify-me",
]  # fmt: skip


def add_channel(*args: str) -> str:
    out = io.StringIO()
    call_command("add_channel", *args, stdout=out)
    return out.getvalue()


def test_it_creates_the_organization_and_a_meta_channel() -> None:
    output = add_channel(*META)

    channel = Channel.objects.get()
    assert output.startswith("Created channel")
    assert channel.organization.name == "Acme"
    assert channel.provider == "meta"
    assert channel.phone_number_id == "106540352242922"
    assert channel.access_token == "EAAG-token"
    assert channel.webhook_verify_token == "verify-me"
    assert channel.messages_per_second == 80
    assert "EAAG-token" not in output


def test_running_it_again_updates_the_same_channel() -> None:
    add_channel(*META)

    output = add_channel(*META[:6], "--access-token", "EAAG-rotated", "--mps", "20")

    channel = Channel.objects.get()
    assert output.startswith("Updated channel")
    assert channel.access_token == "EAAG-rotated"
    assert channel.app_secret == "app-secret"
    assert channel.messages_per_second == 20
    assert Organization.objects.count() == 1


def test_it_creates_twilio_and_console_channels() -> None:
    add_channel(
        "--organization", "Acme", "--provider", "twilio", "--account-sid", "AC" + "1" * 32,
        "--auth-token", "tw-token", "--sender", "whatsapp:+14155238886",
    )  # fmt: skip
    add_channel(
        "--organization", "Acme", "--provider", "console", "--sender", "whatsapp:+15550001111"
    )

    twilio = Channel.objects.get(provider="twilio")
    assert twilio.auth_token == "tw-token"
    assert twilio.sender == "whatsapp:+14155238886"
    assert Channel.objects.filter(provider="console", sender="whatsapp:+15550001111").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--organization", "Acme", "--provider", "meta", "--waba-id", "1"], "--phone-number-id"),
        (
            ["--organization", "Acme", "--provider", "twilio", "--sender", "whatsapp:+14155238886"],
            "--account-sid",
        ),
        (
            ["--organization", "Acme", "--provider", "console", "--sender", "+14155238886"],
            "whatsapp:+E164",
        ),
        ([*META, "--sender", "whatsapp:+14155238886"], "--sender"),
        ([*META, "--mps", "0"], "--mps"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        add_channel(*args)
    assert not Channel.objects.exists()


def test_a_phone_number_id_of_another_organization_is_refused() -> None:
    add_channel(*META)

    with pytest.raises(CommandError, match="already exists"):
        add_channel("--organization", "Other", *META[2:])
    assert Channel.objects.get().organization.name == "Acme"
