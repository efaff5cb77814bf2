"""Signature checks against the providers' published known answers."""

from __future__ import annotations

import hmac

import pytest
from django.http import QueryDict

from webhooks.signature import meta_signature, meta_signature_valid, twilio_signature_valid

TWILIO_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "To": "+18005551212"}


@pytest.mark.parametrize(
    ("url", "caller", "signature"),
    [
        (
            "https://example.com/myapp.php?foo=1&bar=2",
            "+14158675310",
            "L/OH5YylLD5NRKLltdqwSvS0BnU=",
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "+12349013030",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
        ),
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "+14158675309",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
    ],
)
def test_twilio_known_answers_validate(url: str, caller: str, signature: str) -> None:
    params = QueryDict(mutable=True)
    params.update({**TWILIO_PARAMS, "Caller": caller, "From": caller})

    assert twilio_signature_valid(url, params, signature, "12345")
    assert not twilio_signature_valid(url, params, signature, "54321")
    assert not twilio_signature_valid(url.replace("foo=1", "foo=2"), params, signature, "12345")
    assert not twilio_signature_valid(url, params, "", "12345")


def test_meta_signature_is_hmac_sha256_over_the_raw_bytes() -> None:
    body = b'{"entry":[{"text":"\\u00e4\\u00f6\\u00e5 https:\\/\\/example.com"}]}'
    header = meta_signature(body, "secret")

    assert header == "sha256=" + hmac.new(b"secret", body, "sha256").hexdigest()
    assert meta_signature_valid(body, header, "secret")
    assert meta_signature_valid(body, header.upper().replace("SHA256=", "sha256="), "secret")
    assert not meta_signature_valid(body + b" ", header, "secret")
    assert not meta_signature_valid(body, header, "")
    assert not meta_signature_valid(body, "", "secret")
