"""Streaming HTTP downloads from providers, with their failures classified."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import requests

from whatsapp_platform.lib.providers.errors import (
    ProviderCredentialError,
    ProviderPermanentError,
    ProviderRetryableError,
)

TIMEOUT = (5, 30)  # connect, read


def raise_for_status(response: requests.Response, what: str) -> None:
    if response.status_code < 400:
        return
    message = f"{what}: HTTP {response.status_code}"
    if response.status_code in (401, 403):
        raise ProviderCredentialError(message, status=response.status_code)
    if response.status_code == 429 or response.status_code >= 500:
        raise ProviderRetryableError(message, status=response.status_code)
    raise ProviderPermanentError(message, status=response.status_code)


def get_json(url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise ProviderRetryableError(f"GET {url.split('?')[0]}: {type(exc).__name__}") from exc
    raise_for_status(response, "Media lookup")
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def open_download(url: str, **kwargs: Any) -> Iterator[tuple[IO[bytes], str]]:
    """The response body as a stream, and its content type. Redirects are followed; requests
    drops the Authorization header when a redirect leaves the host."""
    try:
        response = requests.get(url, timeout=TIMEOUT, stream=True, **kwargs)
    except requests.RequestException as exc:
        raise ProviderRetryableError(f"Download: {type(exc).__name__}") from exc
    with response:
        raise_for_status(response, "Download")
        response.raw.decode_content = True
        yield response.raw, response.headers.get("Content-Type", "")
