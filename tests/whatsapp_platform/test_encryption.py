"""Secrets are encrypted at rest: the database column never holds the plaintext."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from tests.factories import ChannelFactory
from whatsapp_platform.lib import fields
from whatsapp_platform.models import Channel

pytestmark = pytest.mark.django_db


def raw_column(channel: Channel, column: str) -> str:
    with connection.cursor() as cursor:
        sql = f"SELECT {column} FROM whatsapp_platform_channel WHERE id = %s"  # noqa: S608
        cursor.execute(sql, [channel.id])
        return str(cursor.fetchone()[0])


def test_channel_secrets_are_stored_encrypted_and_read_back_in_plaintext() -> None:
    channel = ChannelFactory(access_token="EAAG-very-secret", app_secret="app-secret-123")

    for column, plaintext in (
        ("access_token", "EAAG-very-secret"),
        ("app_secret", "app-secret-123"),
    ):
        stored = raw_column(channel, column)
        assert plaintext not in stored
        assert stored.startswith("gAAAA")  # a Fernet token
    reloaded = Channel.objects.get(id=channel.id)
    assert reloaded.access_token == "EAAG-very-secret"
    assert reloaded.app_secret == "app-secret-123"


def test_secrets_written_with_an_old_key_still_read_after_a_new_key_is_put_first(settings) -> None:
    channel = ChannelFactory(access_token="before-rotation")
    old_key = settings.FIELD_ENCRYPTION_KEY
    settings.FIELD_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{old_key}"

    reloaded = Channel.objects.get(id=channel.id)
    token = raw_column(channel, "access_token")

    assert reloaded.access_token == "before-rotation"
    assert fields.decrypt(fields.reencrypt(token)) == "before-rotation"
    assert (
        Fernet(settings.FIELD_ENCRYPTION_KEY.split(",")[0]).decrypt(
            fields.reencrypt(token).encode()
        )
        == b"before-rotation"
    )
