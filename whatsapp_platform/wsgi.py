"""The WSGI application: provider webhooks through their own short middleware chain, the rest
(admin, API, dashboard) through settings.MIDDLEWARE.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")


class MiddlewareHandler(WSGIHandler):
    """A Django WSGI handler whose middleware chain is `middleware`, not settings.MIDDLEWARE."""

    def __init__(self, middleware: list[str]) -> None:
        self.middleware = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        from django.conf import settings

        # Django builds the chain from settings.MIDDLEWARE only: swap the list in for the build
        # (once, at start-up).
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = self.middleware
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class Application:
    """Requests under `webhook_prefix` go to `webhooks`, all others to `default`."""

    def __init__(self, default: WSGIHandler, webhooks: WSGIHandler, webhook_prefix: str) -> None:
        self.default, self.webhooks, self.webhook_prefix = default, webhooks, webhook_prefix

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[Any]:
        if environ.get("PATH_INFO", "").startswith(self.webhook_prefix):
            return self.webhooks(environ, start_response)
        return self.default(environ, start_response)


def build() -> Application:
    from django.conf import settings

    default = get_wsgi_application()  # (sets Django up)
    webhooks = MiddlewareHandler(settings.WEBHOOK_MIDDLEWARE)
    return Application(default, webhooks, settings.WEBHOOK_PATH_PREFIX)


application = build()
