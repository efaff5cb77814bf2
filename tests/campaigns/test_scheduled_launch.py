"""The beat task launches due scheduled campaigns, run by a real worker over SQS."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.tasks import launch_due_campaigns
from tests.conftest import Worker, wait_for
from tests.factories import CampaignFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_beat_task_launches_a_due_campaign_in_the_worker(celery_worker: Worker) -> None:
    now = timezone.now()
    due = CampaignFactory(
        status=Campaign.Status.SCHEDULED,
        approved_at=now - timedelta(hours=1),
        scheduled_for=now - timedelta(seconds=5),
    )
    later = CampaignFactory(
        status=Campaign.Status.SCHEDULED,
        approved_at=now - timedelta(hours=1),
        scheduled_for=now + timedelta(hours=1),
    )

    launch_due_campaigns.delay()

    # Launched: with no audience, its fan-out completes it at once.
    launched = (Campaign.Status.RUNNING, Campaign.Status.COMPLETED)
    wait_for(lambda: Campaign.objects.filter(id=due.id, status__in=launched).exists())
    due.refresh_from_db()
    later.refresh_from_db()
    assert due.started_at is not None
    assert later.status == Campaign.Status.SCHEDULED
