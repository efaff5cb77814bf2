"""The OpenAPI schema validates, and the Swagger UI is served with no outside resource."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_schema_validates_without_warnings(tmp_path):
    path = tmp_path / "schema.yml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))

    schema = yaml.safe_load(path.read_text())
    for route in ("/api/messaging/send/", "/api/messaging/send/bulk/", "/api/messages/"):
        assert route in schema["paths"]
    send = schema["paths"]["/api/messaging/send/"]["post"]
    assert {"200", "202", "400", "401", "404", "409", "422"} <= set(send["responses"])
    assert "/api/messages/{message_id}/" in schema["paths"]


def test_the_docs_page_uses_no_cdn(client: Client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "/api/schema/" in page
    external = re.findall(r"""(?:src|href)=["']?((?:https?:)?//[^"' >]+)""", page)
    assert external == []
    assert "cdn" not in page.lower()


def test_the_docs_assets_are_served_locally(settings):
    # As `make run` serves them; production serves the same files after collectstatic.
    settings.WHITENOISE_USE_FINDERS = True
    client = Client()  # a new handler, whose middleware reads the setting
    page = client.get("/api/docs/").content.decode()
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))""", page)

    assert assets
    for asset in assets:
        assert client.get(asset).status_code == 200
