"""The staff dashboard in headless Chromium: it loads with no console errors and its charts draw
the data in the database and SQS."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from campaigns.models import Campaign, CampaignAudience
from conversations.models import Message
from tests.factories import (
    CampaignFactory,
    ChannelFactory,
    ContactFactory,
    MessageFactory,
    MessageTemplateFactory,
)
from webhooks.models import WebhookEvent
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.models import Organization

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    )
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _sign_in(browser: webdriver.Chrome, live_server: Any) -> None:
    user = get_user_model().objects.create_superuser("operator", password="pw")
    client = Client()
    client.force_login(user)
    # Set through DevTools, before any page loads: nothing else is requested.
    browser.execute_cdp_cmd(
        "Network.setCookie",
        {
            "name": settings.SESSION_COOKIE_NAME,
            "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": live_server.url,
        },
    )


def _traffic(organization: Organization) -> Campaign:
    now = timezone.now()
    for i in range(3):
        WebhookEvent.objects.create(
            provider="meta", body="{}", dedupe_key=f"dashboard-{i}", state="processed"
        )
    WebhookEvent.objects.filter(dedupe_key="dashboard-0").update(
        received_at=now - timedelta(minutes=5)
    )
    channel = ChannelFactory(organization=organization)
    campaign = CampaignFactory(
        template=MessageTemplateFactory(channel=channel),
        status=Campaign.Status.RUNNING,
        name="Winter sale",
    )
    for status in (Message.Status.SENT, Message.Status.SENT, Message.Status.QUEUED):
        contact = ContactFactory(organization=organization)
        message = MessageFactory(
            channel=channel,
            contact=contact,
            status=status,
            sent_at=now if status == Message.Status.SENT else None,
        )
        CampaignAudience.objects.create(
            campaign=campaign, contact=contact, state=CampaignAudience.State.QUEUED, message=message
        )
    MessageFactory(
        channel=channel, status=Message.Status.FAILED, failed_at=now, error_code="131026"
    )
    return campaign


def test_dashboard_draws_the_last_hour_with_no_console_errors(
    browser: webdriver.Chrome,
    live_server: Any,
    organization: Organization,
    sqs_queues: dict[str, QueueSetup],
) -> None:
    campaign = _traffic(organization)
    _sign_in(browser, live_server)

    browser.get(f"{live_server.url}/monitoring/dashboard")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
    )

    webhooks = browser.find_elements(By.CSS_SELECTOR, "#chart-webhooks circle.point")
    assert sorted(int(p.get_attribute("data-value") or 0) for p in webhooks) == [1, 2]
    sends = browser.find_elements(By.CSS_SELECTOR, "#chart-sends circle.point")
    assert {(p.get_attribute("data-series"), p.get_attribute("data-value")) for p in sends} == {
        ("sent", "2"),
        ("failed", "1"),
    }
    queue_lines = browser.find_elements(By.CSS_SELECTOR, "#chart-queues polyline")
    assert {line.get_attribute("data-series") for line in queue_lines} >= {"incoming", "outgoing"}
    [bar] = browser.find_elements(By.CSS_SELECTOR, "#chart-campaigns rect.bar")
    assert bar.get_attribute("data-campaign") == str(campaign.pk)
    assert float(bar.get_attribute("data-value") or 0) == pytest.approx(2 / 3, abs=0.001)
    assert "Winter sale" in browser.find_element(By.ID, "chart-campaigns").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_dashboard_is_for_staff_only(client: Client, organization: Organization) -> None:
    response = client.get("/monitoring/dashboard")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert client.get("/monitoring/dashboard/data").status_code == 302
    user = get_user_model().objects.create_user("customer", password="pw", is_staff=False)
    client.force_login(user)
    assert client.get("/monitoring/dashboard").status_code == 302
