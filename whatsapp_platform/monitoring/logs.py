"""Structured logs: a correlation id that follows a request into every task it causes, JSON
lines, and redaction of phone numbers, message text and secrets.

The id lives in a context variable. The middleware sets it for a request (from an incoming
`X-Correlation-ID` or a new one) and answers it in the same header; Celery's publish signal puts
it into each task message's headers, and the worker sets it again before the task runs (see
`monitoring.signals`). So a webhook's request line, its processing task and the media download
or reply that task schedules all log the same id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

HEADER = "X-Correlation-ID"
# The name of the header in task messages ("correlation_id" is Celery's own property).
TASK_HEADER = "platform_correlation_id"

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# A task that carries the work of several requests (a batch of webhook events) logs all of
# their ids, comma-separated: a search for any one of them finds its lines.
_VALID_IDS = re.compile(r"^[A-Za-z0-9._:-]{1,64}(,[A-Za-z0-9._:-]{1,64}){0,99}$")


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def correlation_id_from(value: object, *, several: bool = False) -> str:
    """A usable id from untrusted input (a header), or a new one."""
    pattern = _VALID_IDS if several else _VALID_ID
    if isinstance(value, str) and pattern.match(value):
        return value
    return new_correlation_id()


def correlation_ids_join(ids: Iterable[str]) -> str:
    unique = list(dict.fromkeys(i for i in ids if i))
    return ",".join(unique[:100])


class CorrelationIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Cleared on request_finished rather than here: Django logs an error answer after the
        # middleware has returned, and that line should carry the id too.
        correlation_id.set(correlation_id_from(request.headers.get(HEADER)))
        response = self.get_response(request)
        response[HEADER] = correlation_id.get()
        return response


def clear_correlation_id(**kwargs: Any) -> None:
    correlation_id.set("")


# --- Redaction ------------------------------------------------------------------------------

REDACTED = "[redacted]"
# Fields whose value is a person's number, message content or a secret, whatever it looks like.
_SENSITIVE_KEYS = re.compile(
    r"(^|_)(to|from|phone|phone_number|wa_id|msisdn|number|text|body|caption|content|message_text"
    r"|token|secret|password|authorization|api_key|auth_token|access_token|app_secret|key)$",
    re.IGNORECASE,
)
_PATTERNS = (
    # Secrets: API keys, bearer tokens, Meta and OpenAI tokens, Twilio auth tokens.
    re.compile(r"wpk_[A-Za-z0-9_-]+"),
    re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bEAA[A-Za-z0-9]{20,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\b[0-9a-f]{32}\b"),
    # Phone numbers: with a plus (whatsapp:+15551234567), or E.164 digits of 10 or more.
    re.compile(r"\+\d[\d ()-]{5,18}\d"),
    re.compile(r"(?<![\w.])\d{10,15}(?![\w.])"),
)


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact_value(value: Any, key: str = "") -> Any:
    if key and _SENSITIVE_KEYS.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


# Attributes every LogRecord has: never treated as extras.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "correlation_id",
}


class RedactFilter(logging.Filter):
    """Renders the message with its arguments, then redacts it and every extra field."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call must not lose the line
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS:
                setattr(record, name, redact_value(value, name))
        return True


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get() or "-"
        return True


class JsonFormatter(BaseJsonFormatter):
    """One JSON object per line: time, level, logger, message, correlation id, extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", ["asctime", "levelname", "name", "message", "correlation_id"])
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level"})
        super().__init__(*args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Tracebacks and stack traces are redacted too: they may quote arguments.
        return {
            key: value if key == "correlation_id" else redact_value(value, key)
            for key, value in log_data.items()
        }


class PlainFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact_text(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = "-"
        return super().format(record)
