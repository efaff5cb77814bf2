"""Send pipeline benchmark: chunked campaign sends against a provider that answers in 50 ms.

Starts the fake Graph API of tests/fakes.py in its own process (each send answered after
`--latency` seconds), migrates a scratch PostgreSQL database, queues `--messages` campaign
messages on one Meta channel limited to `--mps`, and sends them with `messages_send` in chunks
of `--chunk`, from `--processes` processes at once (as fan-out workers do). Prints the rate
reached, its share of the limit, and the most sends the fake saw in any one-second window.

    DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/bench_send \\
        .venv/bin/python tests/benchmarks/bench_pipeline.py --messages 5000 --mps 1000

The last line is machine-readable:
RESULT sent=… seconds=… rate=… share_of_limit=… max_in_any_second=… limit=…
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FAKE = """
import json, sys
from tests.fakes import provider_server

latency = float(sys.argv[1])
with provider_server() as (url, state):
    state.send_latency = latency
    print(url, flush=True)
    for line in sys.stdin:
        if line.strip() == "times":
            times = [r.at for r in state.sends()]
            print(json.dumps(times), flush=True)
"""


def max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def _django(provider_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
    os.environ["META_GRAPH_API_BASE_URL"] = provider_url
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("CELERY_TASK_SOFT_TIME_LIMIT", "300")
    import django

    django.setup()


def _send_chunks(provider_url: str, chunks: list[list[int]]) -> None:
    _django(provider_url)
    from conversations.sending import messages_send

    for chunk in chunks:
        messages_send(message_ids=chunk, campaign=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--mps", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    if "DATABASE_URL" not in os.environ:
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (it is emptied).")

    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE, str(args.latency)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    assert fake.stdin is not None
    provider_url = fake.stdout.readline().strip()
    _django(provider_url)
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from conversations.models import Contact, Conversation, Message, SendRate
    from whatsapp_platform.models import Channel, Organization

    call_command("migrate", verbosity=0)
    Message.objects.all().delete()
    Conversation.objects.all().delete()
    Contact.objects.all().delete()
    SendRate.objects.all().delete()
    Channel.objects.all().delete()
    organization, _ = Organization.objects.get_or_create(name="Bench", slug="bench")
    channel = Channel.objects.create(
        organization=organization,
        provider=Channel.Provider.META,
        phone_number_id="106540352242922",
        access_token="EAAG-test-access-token",
        messages_per_second=args.mps,
        messaging_tier=None,
    )
    recent = timezone.now() - timedelta(hours=1)
    contacts = Contact.objects.bulk_create(
        Contact(organization=organization, wa_id=f"44{n:010d}", last_inbound_at=recent)
        for n in range(args.messages)
    )
    conversations = Conversation.objects.bulk_create(
        Conversation(organization=organization, channel=channel, contact=c) for c in contacts
    )
    now = timezone.now()
    messages = Message.objects.bulk_create(
        Message(
            organization=organization,
            channel=channel,
            contact=c,
            conversation=v,
            direction=Message.Direction.OUTBOUND,
            provider=channel.provider,
            type=Message.Type.TEMPLATE,
            content={"template": {"name": "winter_sale", "language": "en_US"}},
            status=Message.Status.QUEUED,
            queued_at=now,
            priority=Message.Priority.LOW,
        )
        for c, v in zip(contacts, conversations, strict=True)
    )
    ids = [m.id for m in messages]
    chunks = [ids[i : i + args.chunk] for i in range(0, len(ids), args.chunk)]
    per_process = [chunks[p :: args.processes] for p in range(args.processes)]

    from django.db import connections

    connections.close_all()
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_send_chunks, args=(provider_url, mine)) for mine in per_process
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started

    fake.stdin.write("times\n")
    fake.stdin.flush()
    times = json.loads(fake.stdout.readline())
    fake.stdin.close()
    fake.terminate()
    sent = Message.objects.filter(id__in=ids, status=Message.Status.SENT).count()
    span = (max(times) - min(times)) if len(times) > 1 else elapsed
    rate = (len(times) - 1) / span if span else 0.0
    busiest = max_in_any_second(times)
    print(f"messages={args.messages} chunk={args.chunk} processes={args.processes}")
    print(f"provider calls={len(times)} (one per message: {len(times) == len(ids)})")
    print(f"sent={sent} in {elapsed:.2f}s; provider-side rate {rate:.0f}/s")
    print(f"limit={args.mps}/s; share reached {rate / args.mps:.1%}; busiest second {busiest}")
    print(
        f"RESULT sent={sent} seconds={elapsed:.2f} rate={rate:.0f} "
        f"share_of_limit={rate / args.mps:.3f} max_in_any_second={busiest} limit={args.mps}"
    )


if __name__ == "__main__":
    main()
