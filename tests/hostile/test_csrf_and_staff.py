"""Only the webhooks skip CSRF; the admin and the staff endpoints refuse everyone but staff,
and the platform-wide ones everyone but superusers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.authentication import SessionAuthentication
from rest_framework.views import APIView

from campaigns.models import Campaign
from tests.factories import CampaignFactory
from webhooks import views as webhook_views

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"


def _views(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _views(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


ALL_VIEWS = list(_views(get_resolver()))


def _api_view_class(callback: Any) -> type[APIView] | None:
    cls = getattr(callback, "cls", None)
    return cls if isinstance(cls, type) and issubclass(cls, APIView) else None


def test_the_webhook_endpoints_are_the_only_django_views_exempt_from_csrf() -> None:
    exempt = {
        route: callback
        for route, callback in ALL_VIEWS
        if getattr(callback, "csrf_exempt", False) and _api_view_class(callback) is None
    }

    assert set(exempt) == {"webhooks/meta/", "webhooks/twilio/inbound/", "webhooks/twilio/status/"}
    assert set(exempt.values()) == {
        webhook_views.meta_webhook,
        webhook_views.twilio_inbound,
        webhook_views.twilio_status,
    }


def test_rest_views_check_csrf_whenever_a_session_signs_them_in() -> None:
    """DRF views are exempt from the middleware and check CSRF in SessionAuthentication."""
    api_views = [cls for _, callback in ALL_VIEWS if (cls := _api_view_class(callback))]

    assert len(api_views) > 20  # the walk found the API
    for cls in api_views:
        for authentication in cls().get_authenticators():
            if isinstance(authentication, SessionAuthentication):
                # The stock class, whose enforce_csrf is not overridden to let requests through.
                assert type(authentication).enforce_csrf is SessionAuthentication.enforce_csrf


@pytest.fixture
def users() -> dict[str, User]:
    return {
        "customer": User.objects.create_user("customer", password=PASSWORD),
        "staff": User.objects.create_user("staff", password=PASSWORD, is_staff=True),
        "superuser": User.objects.create_superuser("root", password=PASSWORD),
    }


def _client(users: dict[str, User], who: str, **options: Any) -> Client:
    client = Client(**options)
    if who != "anonymous":
        client.force_login(users[who])
    return client


STAFF_PAGES = [
    "/admin/",
    "/admin/conversations/message/",
    "/admin/campaigns/campaign/",
    "/monitoring/dashboard",
    "/monitoring/dashboard/data",
]
STAFF_API = [
    ("get", "/monitoring/dead-letters/"),
    ("post", "/monitoring/dead-letters/redrive/"),
    ("post", "/monitoring/dead-letters/purge/"),
]


@pytest.mark.parametrize("who", ["anonymous", "customer"])
@pytest.mark.parametrize("path", STAFF_PAGES)
def test_admin_and_staff_pages_send_everyone_but_staff_to_the_login(users, who, path) -> None:
    response = _client(users, who).get(path)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_a_superuser_sees_the_admin_and_staff_pages(users, path) -> None:
    assert _client(users, "superuser").get(path).status_code == 200


def test_staff_see_the_admin_index(users) -> None:
    assert _client(users, "staff").get("/admin/").status_code == 200


@pytest.mark.parametrize("path", ["/monitoring/dashboard", "/monitoring/dashboard/data"])
def test_staff_who_are_not_superusers_are_refused_the_dashboard(users, path) -> None:
    response = _client(users, "staff").get(path)

    assert response.status_code == 403
    assert "superusers only" in response.content.decode()


@pytest.mark.parametrize("path", ["/admin/conversations/message/", "/admin/campaigns/campaign/"])
def test_staff_without_the_permission_see_no_model_pages(users, path) -> None:
    assert _client(users, "staff").get(path).status_code == 403


@pytest.mark.parametrize("who", ["anonymous", "customer", "staff"])
@pytest.mark.parametrize(("method", "path"), STAFF_API)
def test_the_dead_letter_api_refuses_everyone_but_superusers(users, who, method, path) -> None:
    response = getattr(_client(users, who), method)(
        path, {"all": True}, content_type="application/json"
    )

    assert response.status_code in (401, 403)
    assert response.json()["detail"]


@pytest.mark.parametrize("who", ["anonymous", "customer"])
def test_the_staff_api_refuses_basic_auth_of_non_staff(users, who) -> None:
    credentials = base64.b64encode(f"{who}:{PASSWORD}".encode()).decode()

    response = Client().get(
        "/monitoring/dead-letters/", headers={"Authorization": f"Basic {credentials}"}
    )

    assert response.status_code in (401, 403)


@pytest.mark.parametrize("who", ["anonymous", "customer", "staff"])
@pytest.mark.parametrize("step", ["approve", "reject"])
def test_only_approvers_approve_or_reject(users, who, step) -> None:
    campaign = CampaignFactory(status=Campaign.Status.PENDING_APPROVAL)

    response = _client(users, who).post(
        f"/api/campaigns/{campaign.id}/{step}/", {"reason": "No"}, content_type="application/json"
    )

    assert response.status_code in (401, 403)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_a_staff_session_without_the_csrf_token_cannot_approve(users) -> None:
    campaign = CampaignFactory(status=Campaign.Status.PENDING_APPROVAL)
    client = _client(users, "superuser", enforce_csrf_checks=True)

    response = client.post(f"/api/campaigns/{campaign.id}/approve/")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.PENDING_APPROVAL


def test_a_staff_session_without_the_csrf_token_cannot_purge_dead_letters(users) -> None:
    client = _client(users, "superuser", enforce_csrf_checks=True)

    response = client.post(
        "/monitoring/dead-letters/purge/", {"all": True}, content_type="application/json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_an_admin_form_without_the_csrf_token_is_refused(users) -> None:
    client = _client(users, "staff", enforce_csrf_checks=True)

    response = client.post("/admin/logout/")

    assert response.status_code == 403


def test_webhooks_take_posts_without_a_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post("/webhooks/meta/", b"{}", content_type="application/json")

    # Refused for its body, not for CSRF: providers never hold a token.
    assert response.status_code == 400
    assert "entry" in response.json()["error"]
