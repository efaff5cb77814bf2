"""One classification of provider failures, whatever the provider.

Retryable failures back off and try again; permanent ones are recorded and never retried;
credential failures also flag the channel in the admin.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)


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


class ProviderOutcomeUnknownError(Exception):
    """A send reached the provider but no answer came back (a read timeout, a connection
    dropped mid-answer): it may have been accepted, so sending it again could deliver it twice.
    Not a ProviderError: the pipeline marks the message `unknown` and reconciles it from the
    status webhooks instead of retrying."""


class SendSlotMissed(Exception):
    """The send's deadline passed before its first byte left: nothing reached the provider, so
    it is safe to make later (it takes a new pacing slot). Not a ProviderError."""


def refuse_if_past(not_after: float | None) -> None:
    """SendSlotMissed when a send's deadline (a `time.monotonic()` moment) has passed."""
    if not_after is not None and time.monotonic() > not_after:
        raise SendSlotMissed("The send's slot passed before it began.")


def _never_connected(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def transport_error(exc: requests.RequestException, what: str, *, send: bool) -> Exception:
    """The classified error of a call that got no HTTP answer.

    A call that never connected is safe to repeat. A send whose request went out may have been
    accepted: its outcome is unknown. Reads (listings, lookups) are always safe to repeat.
    """
    if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout):
        if send:
            return ProviderOutcomeUnknownError(f"{what}: no answer in time")
        return ProviderRetryableError(f"{what}: timed out", code="timeout")
    if send and not _never_connected(exc) and isinstance(exc, requests.ConnectionError):
        return ProviderOutcomeUnknownError(f"{what}: the connection dropped")
    return ProviderRetryableError(f"{what}: {type(exc).__name__}", code="connection")


def send_transport_error(exc: HTTPError, what: str) -> Exception:
    """`transport_error` for a send made with urllib3 directly (retries off, as requests has
    them): the same classification."""
    reason = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(reason, NewConnectionError | ConnectTimeoutError):
        return ProviderRetryableError(f"{what}: {type(reason).__name__}", code="connection")
    if isinstance(reason, ReadTimeoutError):
        return ProviderOutcomeUnknownError(f"{what}: no answer in time")
    return ProviderOutcomeUnknownError(f"{what}: the connection dropped")


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
