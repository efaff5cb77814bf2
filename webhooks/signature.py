"""Signature checks of provider webhooks: pure functions of bytes, parameters and a secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from twilio.request_validator import RequestValidator


def meta_signature(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def meta_signature_valid(body: bytes, header: str, app_secret: str) -> bool:
    """`X-Hub-Signature-256` over the raw body bytes exactly as received.

    Meta signs its escaped wire form (`\\u00e4`, `\\/`), so the bytes must never be re-serialised.
    """
    if not header or not app_secret:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters, which any sender can put
    # in a header.
    given = header.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(meta_signature(body, app_secret).encode(), given)


def twilio_signature_valid(
    url: str, params: Mapping[str, Any], header: str, auth_token: str
) -> bool:
    """`X-Twilio-Signature` over the public URL and every posted parameter (a QueryDict)."""
    if not header or not auth_token:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, header))


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))
