from __future__ import annotations

from prometheus_client import Counter

webhooks_received = Counter(
    "webhooks_received_total", "Webhook deliveries by provider and result.", ["provider", "result"]
)
