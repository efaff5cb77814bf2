"""Fan-out: turning a launched campaign's audience into queued messages."""

from __future__ import annotations


def fan_out_start(*, campaign_id: int) -> None:
    """The entry point of a running campaign's sending: launch and resume call it after commit.

    It enqueues the work that sends the campaign's pending recipients, and must be safe to call
    again for a campaign that is already sending. Nothing is enqueued yet.
    """
