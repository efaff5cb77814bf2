"""Messaging API benchmark: how long a bulk send of 1,000 messages takes, and its queries.

Runs the API in process (Django's test client, no HTTP server) on PostgreSQL, with an
in-memory broker, so the figures are the API's own work: validation, the rules, the bulk
look-ups and the writes. Prints, for a few rounds:

1. a bulk of 1,000 templates to new numbers (the contacts are created);
2. a bulk of 1,000 templates to known numbers;
3. the same bulk again with its idempotency keys (1,000 duplicates, nothing queued);
4. single sends, one request each.

Usage: .venv/bin/python tests/benchmarks/bench_api_bulk.py [--rounds 3]
It needs PostgreSQL (BENCH_DATABASE_URL, default the local server); the `whatsapp_bench_api`
database is recreated. The last line is machine-readable:
RESULT bulk_new_ms=… bulk_known_ms=… bulk_duplicate_ms=… bulk_queries=… single_ms=…
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.harness import recreate_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    base = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )
    url = base.rsplit("/", 1)[0] + "/whatsapp_bench_api"
    recreate_database(url)
    os.environ.update(
        {
            "DATABASE_URL": url,
            "CELERY_BROKER_URL": "memory://",
            "DEBUG": "False",  # no query log kept in memory
            "SECURE_SSL_REDIRECT": "False",
            "ALLOWED_HOSTS": "testserver",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-secret-key-" + "x" * 40),
            "FIELD_ENCRYPTION_KEY": os.environ.get(
                "FIELD_ENCRYPTION_KEY", "jmdq1tHqF7sJ5bZ0pP3W6k3nK7fKQ4XoJxqvG2Hk0aA="
            ),
            "DJANGO_SETTINGS_MODULE": "whatsapp_platform.settings",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from campaigns.models import MessageTemplate
    from conversations.models import Contact
    from whatsapp_platform.models import Channel, Organization
    from whatsapp_platform.services import api_key_create

    call_command("migrate", verbosity=0)
    organization = Organization.objects.create(name="Bench", slug="bench")
    channel = Channel.objects.create(
        organization=organization,
        provider=Channel.Provider.CONSOLE,
        sender="whatsapp:+15550000001",
    )
    MessageTemplate.objects.create(
        organization=organization,
        channel=channel,
        name="order_shipped",
        category=MessageTemplate.Category.UTILITY,
        body="Hi {{1}}, order {{2}} has shipped.",
        status=MessageTemplate.Status.APPROVED,
    )
    _, raw_key = api_key_create(organization=organization, name="bench")
    client = Client(headers={"Authorization": f"Bearer {raw_key}"})

    def bulk(numbers: range, round_no: int, keyed: bool) -> tuple[float, int]:
        items = [
            {
                "to": f"+3161{n:07d}",
                "type": "template",
                "template": {"name": "order_shipped", "parameters": ["Dana", f"#{n}"]},
                **({"idempotency_key": f"r{round_no}-{n}"} if keyed else {}),
            }
            for n in numbers
        ]
        queries = 0

        def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            nonlocal queries
            queries += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            started = time.perf_counter()
            response = client.post(
                "/api/messaging/send/bulk/", {"messages": items}, content_type="application/json"
            )
            elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.content[:300]
        return elapsed * 1000, queries

    new_ms, known_ms, duplicate_ms, query_counts = [], [], [], []
    for round_no in range(args.rounds):
        numbers = range(round_no * 1000, round_no * 1000 + 1000)
        ms, new_count = bulk(numbers, round_no, keyed=True)
        new_ms.append(ms)
        ms, count = bulk(numbers, round_no + 100, keyed=True)
        known_ms.append(ms)
        query_counts.append(count)
        ms, _ = bulk(numbers, round_no + 100, keyed=True)
        duplicate_ms.append(ms)
        print(
            f"round {round_no + 1}: 1,000 new contacts {new_ms[-1]:.0f} ms ({new_count} queries), "
            f"known contacts {known_ms[-1]:.0f} ms ({count} queries), "
            f"1,000 duplicates {duplicate_ms[-1]:.0f} ms"
        )

    Contact.objects.filter(organization=organization).update(last_inbound_at=timezone.now())
    single = []
    for n in range(200):
        started = time.perf_counter()
        response = client.post(
            "/api/messaging/send/",
            {"to": f"+3161{n:07d}", "type": "text", "text": {"body": "Hello"}},
            content_type="application/json",
        )
        single.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 202, response.content[:300]
    single_ms = statistics.median(single)
    print(f"single text sends: median {single_ms:.1f} ms over {len(single)} requests")
    print(
        f"RESULT bulk_new_ms={statistics.median(new_ms):.0f} "
        f"bulk_known_ms={statistics.median(known_ms):.0f} "
        f"bulk_duplicate_ms={statistics.median(duplicate_ms):.0f} "
        f"bulk_queries={statistics.median(query_counts):.0f} single_ms={single_ms:.1f}"
    )


if __name__ == "__main__":
    main()
