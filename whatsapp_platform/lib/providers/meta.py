"""Meta's Graph API (base URL and version from settings, so tests use a local server)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from whatsapp_platform.lib.providers.http import get_json


def graph_url(path: str) -> str:
    return (
        f"{settings.META_GRAPH_API_BASE_URL}/{settings.META_GRAPH_API_VERSION}/{path.lstrip('/')}"
    )


def auth_headers(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def media_info(media_id: str, access_token: str) -> dict[str, Any]:
    """`{url, mime_type, sha256, file_size, id}`; the URL lives 5 minutes and needs the token."""
    return get_json(graph_url(media_id), headers=auth_headers(access_token))
