"""One classification of provider failures, whatever the provider.

Retryable failures back off and try again; permanent ones are recorded and never retried;
credential failures also flag the channel in the admin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class ProviderError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        # The provider's own error code as a string ("131050", "21211"); empty when it gave none.
        self.code = code
        self.status = status
        # Seconds to wait before trying again, when the provider or its documentation says.
        self.retry_after = retry_after


class ProviderRetryableError(ProviderError):
    """5xx, timeouts, rate limits: try again later."""


class ProviderPermanentError(ProviderError):
    """The request itself is wrong (bad recipient, template, media): never retry."""


class ProviderCredentialError(ProviderPermanentError):
    """The channel's token or secret is wrong or expired."""


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """A `Retry-After` given in seconds; the HTTP-date form is rare from these APIs."""
    value = headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


_NUMBER = re.compile(r"\+?\d{7,15}")


def redact_numbers(text: str) -> str:
    """The provider's error text without phone numbers, which some errors quote back."""
    return _NUMBER.sub("[number]", text)
