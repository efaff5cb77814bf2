"""Operations endpoints: health checks (open, for load balancers and orchestrators), metrics,
summary and alerts (METRICS_TOKEN as a bearer token, or a superuser's session), and the
dashboard (superusers).

All but the health checks span organizations (every queue, every organization's traffic and
campaigns), so they are the platform operators', the superusers', never members'."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from whatsapp_platform.monitoring import services
from whatsapp_platform.monitoring.collectors import metrics_text
from whatsapp_platform.monitoring.selectors import dashboard_data
from whatsapp_platform.roles import is_platform_operator

View = Callable[..., HttpResponse]


def _answer(ok: bool, body: dict[str, Any]) -> JsonResponse:
    return JsonResponse({"status": "ok" if ok else "failing", **body}, status=200 if ok else 503)


@require_GET
@never_cache
def health_ready(request: HttpRequest) -> JsonResponse:
    """Readiness: the database, the broker and archive storage answer."""
    checks = services.health_ready()
    failed = [name for name, check in checks.items() if not check.ok]
    body: dict[str, Any] = {
        "checks": {name: {"ok": c.ok, **c.detail} for name, c in checks.items()}
    }
    if failed:
        body["failed"] = failed
    return _answer(not failed, body)


@require_GET
@never_cache
def health_sqs(request: HttpRequest) -> JsonResponse:
    ok, body = services.health_queues()
    if not ok:
        body["failed"] = ["sqs"]
    return _answer(ok, body)


@require_GET
@never_cache
def health_workers(request: HttpRequest) -> JsonResponse:
    ok, body = services.health_workers()
    return _answer(ok, body)


def _operator(request: HttpRequest) -> bool:
    return is_platform_operator(request.user)


def _token_valid(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


def _unauthorized() -> JsonResponse:
    response = JsonResponse(
        {"error": "A valid bearer token (METRICS_TOKEN) or a superuser's session is required."},
        status=401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="monitoring"'
    return response


def _scraper_only(view: View) -> View:
    """Metrics: open when METRICS_TOKEN is unset; else its bearer token or a superuser."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if settings.METRICS_TOKEN and not (_token_valid(request) or _operator(request)):
            return _unauthorized()
        return view(request, *args, **kwargs)

    return wraps(view)(wrapper)


def _operator_only(view: View) -> View:
    """Summary and alerts name every organization's campaigns and channels: the token or a
    superuser's session, always."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (_token_valid(request) or _operator(request)):
            return _unauthorized()
        return view(request, *args, **kwargs)

    return wraps(view)(wrapper)


@require_GET
@never_cache
@_scraper_only
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


@require_GET
@never_cache
@_operator_only
def summary(request: HttpRequest) -> JsonResponse:
    return JsonResponse(services.summary())


@require_GET
@never_cache
@_operator_only
def alerts(request: HttpRequest) -> JsonResponse:
    active = services.alerts_evaluate()
    return JsonResponse(
        {"alerts": [a.as_dict() for a in active], "thresholds": services.thresholds()}
    )


def _operator_page(view: View) -> View:
    """The dashboard: people signed out go to the admin's login, staff who are not
    superusers are refused."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _operator(request):
            return HttpResponseForbidden(
                "The dashboard shows every organization's traffic: superusers only."
            )
        return view(request, *args, **kwargs)

    return staff_member_required(wraps(view)(wrapper))


@require_GET
@never_cache
@_operator_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "monitoring/dashboard.html", {"refresh_seconds": 15})


@require_GET
@never_cache
@_operator_page
def dashboard_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dashboard_data())
