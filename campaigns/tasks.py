from __future__ import annotations

from celery import shared_task


@shared_task
def launch_due_campaigns() -> None:
    """Beat, every minute: launch the scheduled campaigns whose time has come."""
    from campaigns.services import campaigns_launch_due

    campaigns_launch_due()
