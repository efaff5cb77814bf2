"""Twilio REST API details shared by sending and media download."""

from __future__ import annotations

import re

from django.conf import settings


def is_account_media_url(url: str, account_sid: str) -> bool:
    """Only a media URL of this account's own messages gets the account's credentials, so a
    forged webhook cannot make us send them elsewhere."""
    base = re.escape(settings.TWILIO_API_BASE_URL.rstrip("/"))
    pattern = rf"^{base}/2010-04-01/Accounts/{re.escape(account_sid)}/Messages/\w+/Media/\w+$"
    return re.match(pattern, url) is not None
