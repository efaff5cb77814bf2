"""AI reply benchmark: the platform's own work per AI reply, and replies under racing workers.

Runs in process on PostgreSQL with an in-memory broker and the fake OpenAI API of
tests/fake_openai.py (an answer in about 2 ms over loopback), so the figures are the
platform's work: recording a burst's messages with the reply hook, then for each conversation
the lease, gathering, the model input, the Responses API call through the openai library and
the recorded answer. Then 4 threads race over fresh conversations, every thread replying to
every conversation, and the replies are counted (one per conversation is right).

Usage: .venv/bin/python tests/benchmarks/bench_ai_replies.py [--conversations 200]
It needs PostgreSQL (BENCH_DATABASE_URL, default the local server); the `whatsapp_bench_ai`
database is recreated. The last line is machine-readable:
RESULT receive_ms=… receive_without_ai_ms=… reply_ms=… reply_p95_ms=… reply_queries=… race_replies=… race_expected=…
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.harness import recreate_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()

    from tests.fake_openai import API_KEY, openai_server

    base = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )
    url = base.rsplit("/", 1)[0] + "/whatsapp_bench_ai"
    recreate_database(url)
    with openai_server() as (openai_url, state):
        os.environ.update(
            {
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": "memory://",
                "DEBUG": "False",
                "SECURE_SSL_REDIRECT": "False",
                "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-secret-key-" + "x" * 40),
                "FIELD_ENCRYPTION_KEY": os.environ.get(
                    "FIELD_ENCRYPTION_KEY", "jmdq1tHqF7sJ5bZ0pP3W6k3nK7fKQ4XoJxqvG2Hk0aA="
                ),
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": openai_url,
                "DJANGO_SETTINGS_MODULE": "whatsapp_platform.settings",
            }
        )
        import django

        django.setup()
        _run(args.conversations, state)


def _run(count: int, state: object) -> None:
    from django.core.management import call_command
    from django.db import connection, connections
    from django.utils import timezone

    from conversations.assistant import conversation_reply
    from conversations.models import AiReply, Assistant, Conversation
    from conversations.services import message_receive
    from conversations.types import InboundMessage
    from whatsapp_platform.models import Channel, Organization

    call_command("migrate", verbosity=0)
    organization = Organization.objects.create(name="Bench", slug="bench")
    channel = Channel.objects.create(
        organization=organization,
        provider=Channel.Provider.CONSOLE,
        sender="whatsapp:+15550000001",
    )
    Assistant.objects.create(channel=channel, enabled=True, instructions="Be brief.")

    def burst(offset: int) -> list[int]:
        """Three messages from each of `count` customers; returns their conversation ids."""
        timings = []
        ids = []
        for n in range(offset, offset + count):
            for text in ("Hi", "my order is late", "order 7781"):
                started = time.perf_counter()
                message, _ = message_receive(
                    channel=channel,
                    inbound=InboundMessage(
                        provider_message_id=f"SM{uuid.uuid4().hex}",
                        wa_id=f"3161{n:07d}",
                        user_id=None,
                        profile_name="",
                        username="",
                        type="text",
                        text=text,
                        content={},
                        timestamp=None,
                        reply_to_provider_id=None,
                        media=None,
                    ),
                )
                timings.append((time.perf_counter() - started) * 1000)
            ids.append(message.conversation_id or 0)
        receive_ms.append(statistics.median(timings))
        # The debounce window has passed.
        Conversation.objects.filter(id__in=ids).update(reply_due_at=timezone.now())
        return ids

    receive_ms: list[float] = []
    conversation_ids = burst(0)
    reply_times, query_counts = [], []
    for conversation_id in conversation_ids:
        queries = 0

        def counting(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            nonlocal queries
            queries += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(counting):
            started = time.perf_counter()
            outcome = conversation_reply(conversation_id=conversation_id)
            reply_times.append((time.perf_counter() - started) * 1000)
        assert outcome.outcome == "sent", outcome
        query_counts.append(queries)
    reply_ms = statistics.median(reply_times)
    p95 = statistics.quantiles(reply_times, n=20)[-1]
    print(
        f"receive (with the reply hook): median {receive_ms[0]:.1f} ms a message; "
        f"reply: median {reply_ms:.1f} ms, p95 {p95:.1f} ms, "
        f"{statistics.median(query_counts):.0f} queries"
    )

    racing = burst(100_000)
    Assistant.objects.filter(channel=channel).update(enabled=False)
    burst(200_000)  # the same messages on a channel without AI replies, for comparison
    Assistant.objects.filter(channel=channel).update(enabled=True)

    def reply_all(_: int) -> None:
        for conversation_id in racing:
            conversation_reply(conversation_id=conversation_id)
        connections.close_all()

    before = AiReply.objects.count()
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(reply_all, range(4)))
    elapsed = time.perf_counter() - started
    raced = AiReply.objects.count() - before
    print(
        f"4 threads racing over {len(racing)} conversations: {raced} replies in {elapsed:.1f} s, "
        f"{len(getattr(state, 'responses', []))} model calls in all"
    )
    print(f"receive without AI replies: median {receive_ms[2]:.1f} ms a message")
    print(
        f"RESULT receive_ms={receive_ms[0]:.1f} receive_without_ai_ms={receive_ms[2]:.1f} reply_ms={reply_ms:.1f} reply_p95_ms={p95:.1f} "
        f"reply_queries={statistics.median(query_counts):.0f} race_replies={raced} "
        f"race_expected={len(racing)}"
    )


if __name__ == "__main__":
    main()
