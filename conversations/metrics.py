"""Prometheus metrics of AI replies: tokens spent, how long answers take, how replies ended."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ai_tokens = Counter("ai_tokens_total", "OpenAI tokens spent, by model and kind.", ["model", "kind"])
ai_reply_latency = Histogram(
    "ai_reply_latency_seconds",
    "Time the OpenAI Responses API took to answer one reply.",
    buckets=(0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
# Outcomes: sent, fallback, retry, handover, budget_exhausted, opted_out, outside_window.
ai_replies = Counter("ai_replies_total", "AI reply attempts by outcome.", ["outcome"])
