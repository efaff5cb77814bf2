"""One classification of provider failures, whatever the provider.

Retryable failures back off and try again; permanent ones are recorded and never retried;
credential failures also flag the channel in the admin.
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ProviderRetryableError(ProviderError):
    """5xx, timeouts, rate limits: try again later."""


class ProviderPermanentError(ProviderError):
    """The request itself is wrong (bad recipient, template, media): never retry."""


class ProviderCredentialError(ProviderPermanentError):
    """The channel's token or secret is wrong or expired."""
