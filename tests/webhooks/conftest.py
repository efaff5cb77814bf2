"""Signed webhook deliveries, as the providers send them, and the channels they name."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.db import connection
from django.test.client import Client as DjangoClient

from tests.factories import ChannelFactory, OrganizationFactory, TwilioChannelFactory
from webhooks.signature import meta_signature, twilio_signature
from webhooks.writer import APPLICATION_NAME
from whatsapp_platform.models import Channel

PAYLOADS = Path(__file__).parent / "payloads"
META_APP_SECRET = "meta-app-secret"
PHONE_NUMBER_ID = "106540352242922"
SECOND_PHONE_NUMBER_ID = "106540352242999"
WABA_ID = "102290129340398"
TWILIO_ACCOUNT_SID = "AC" + "1" * 32
TWILIO_AUTH_TOKEN = "twilio-auth-token-acme"
TWILIO_SENDER = "whatsapp:+14155238886"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def meta_wire(body: Any) -> bytes:
    """JSON as Meta puts it on the wire: compact, ASCII-only with \\uXXXX escapes, `/` as `\\/`."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def post_meta(
    client: DjangoClient, body: bytes | Any, secret: str | None = META_APP_SECRET, **headers: str
) -> Any:
    raw = body if isinstance(body, bytes) else meta_wire(body)
    if secret is not None:
        headers.setdefault("X-Hub-Signature-256", meta_signature(raw, secret))
    return client.post("/webhooks/meta/", raw, content_type="application/json", headers=headers)


def post_twilio(
    client: DjangoClient,
    kind: str,
    params: dict[str, str],
    auth_token: str = TWILIO_AUTH_TOKEN,
    **headers: str,
) -> Any:
    path = f"/webhooks/twilio/{kind}/"
    headers.setdefault(
        "X-Twilio-Signature", twilio_signature(settings.PUBLIC_BASE_URL + path, params, auth_token)
    )
    return client.post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", headers=headers
    )


@pytest.fixture(scope="session", autouse=True)
def event_writers_disconnected(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The test database can be dropped only once no writer holds a connection to it."""
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s AND datname = current_database()",
                    [APPLICATION_NAME],
                )
        connection.close()


@pytest.fixture
def meta_acme() -> Channel:
    """The channel the Meta fixtures name."""
    return ChannelFactory(
        organization=OrganizationFactory(name="Acme"),
        phone_number_id=PHONE_NUMBER_ID,
        waba_id=WABA_ID,
        display_phone_number="15550783881",
        app_secret=META_APP_SECRET,
    )


@pytest.fixture
def twilio_acme() -> Channel:
    """The channel the Twilio fixtures name."""
    return TwilioChannelFactory(
        organization=OrganizationFactory(name="Acme"),
        account_sid=TWILIO_ACCOUNT_SID,
        auth_token=TWILIO_AUTH_TOKEN,
        sender=TWILIO_SENDER,
    )


@pytest.fixture
def edit() -> Callable[[Any, Callable[[dict[str, Any]], None]], Any]:
    """A changed copy of a payload: edit(payload, lambda value: ...) on each change's value."""

    def apply(body: Any, change: Callable[[dict[str, Any]], None]) -> Any:
        body = copy.deepcopy(body)
        for entry in body["entry"]:
            for item in entry["changes"]:
                change(item["value"])
        return body

    return apply
