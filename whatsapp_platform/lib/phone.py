"""Phone numbers in the one form WhatsApp uses: E.164 digits without the plus (`wa_id`)."""

from __future__ import annotations

import phonenumbers


class InvalidPhoneNumber(ValueError):
    pass


def normalize_msisdn(raw: str, *, default_region: str | None = None) -> str:
    """`+44 7700 900461`, `whatsapp:+447700900461` or `447700900461` → `447700900461`.

    A number without a country code is read in `default_region` (ISO 3166 code) when given.
    Raises InvalidPhoneNumber for anything that is not a valid number.
    """
    text = (raw or "").strip().removeprefix("whatsapp:").strip()
    if not text:
        raise InvalidPhoneNumber("The phone number is empty.")
    if not text.startswith("+") and (default_region is None or text.startswith("00")):
        text = "+" + text.removeprefix("00")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"Not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("Not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
