"""Fixtures of the operations tests: a superuser, an API caller, and a queue no worker reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from whatsapp_platform.lib.sqs import QueueSetup, ensure_queues, sqs_client
from whatsapp_platform.models import Organization
from whatsapp_platform.services import api_key_create


@pytest.fixture
def staff_client(client: Client) -> Client:
    # The dashboard, the dead letters and the summary are the superusers'.
    user = get_user_model().objects.create_superuser("operator", password="operator-password")
    client.force_login(user)
    return client


@dataclass
class ApiCaller:
    client: Client
    organization: Organization
    raw_key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw_key}"}

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, body, content_type="application/json", headers=self.headers())

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers())


@pytest.fixture
def api(client: Client, organization: Organization) -> ApiCaller:
    _, raw_key = api_key_create(organization=organization, name="App")
    return ApiCaller(client, organization, raw_key)


@pytest.fixture
def idle_queue(sqs_queues: dict[str, QueueSetup], settings: Any) -> Iterator[QueueSetup]:
    """A work queue (with its dead-letter queue) that the test worker does not consume, so
    what a test puts there stays; emptied afterwards."""
    name = f"idle{uuid.uuid4().hex[:8]}"
    settings.WORK_QUEUES = (*settings.WORK_QUEUES, name)
    setup = next(q for q in ensure_queues() if q.name.endswith(name))
    yield setup
    client = sqs_client()
    for url in (setup.url, setup.dead_letter_url):
        client.delete_queue(QueueUrl=url)
