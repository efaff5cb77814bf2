"""Campaign send benchmark (`make bench-send`).

A campaign of 20,000 recipients on a Meta channel limited to 1,000 messages per second, sent by
two Celery worker processes on the `outgoing` queue (SQS on a local moto server, PostgreSQL)
to a local fake Graph API that answers every send after 50 ms.

The audience is imported in bulk, the campaign approved through the services and launched; the
benchmark waits until it has completed. From the fake's receive times it prints the rate
achieved (first to last message), the most messages received in any sliding one-second window
(must not exceed the limit), recipients messaged more than once and recipients never messaged
(both must be 0). The last line is machine-readable:

RESULT achieved_mps=… limit_mps=… ratio=… max_window=… duplicates=… missed=…
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests.benchmarks.harness import (  # noqa: E402
    Processes,
    free_port,
    platform_env,
    recreate_database,
    wait_port,
)

ACCESS_TOKEN = "EAAG-bench-access-token"
PHONE_NUMBER_ID = "106540352242922"


def cpu_seconds(bench_pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by each process of the set-up, by pid, read from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        pid = int(stat.parent.name)
        if pid == bench_pid:
            part = "bench + fake Graph API"
        elif "moto_server" in cmdline:
            part = "sqs (moto)"
        elif text.split(" ")[1].startswith("(postgres"):
            part = "postgres (all databases)"
        elif "celery" in cmdline and "outgoing" in cmdline:
            part = "workers"
        else:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # With the CPU of its children that have ended: PostgreSQL's closed connections.
        used[pid] = (part, sum(int(f) for f in fields[11:15]) / ticks)
    return used


def cpu_split(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> str:
    """Each part's share of one core, from the processes still running at the end."""
    totals: dict[str, float] = {}
    for pid, (part, cpu) in after.items():
        totals[part] = totals.get(part, 0.0) + cpu - before.get(pid, (part, 0.0))[1]
    parts = sorted(totals, key=lambda k: -totals[k])
    return ", ".join(f"{k} {100 * totals[k] / seconds:.0f}%" for k in parts)


class FakeGraphApi:
    """Meta's send endpoint on an asyncio server: each answer after `latency` seconds, with
    hundreds of connections open at once. Records when each send arrived and to whom."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.received: list[tuple[float, str]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return web.json_response(
                {"error": {"message": "Invalid OAuth access token.", "code": 190}}, status=401
            )
        body = await request.json()
        self.received.append((time.time(), body["to"]))
        await asyncio.sleep(self.latency)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                "messages": [
                    {"id": f"wamid.BENCH{uuid.uuid4().hex}", "message_status": "accepted"}
                ],
            }
        )

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{version}/{phone_number_id}/messages", self._send)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> str:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any interval [t, t + window)."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + window, lo=i) - i)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=1000, help="The channel's messages/s.")
    parser.add_argument("--latency", type=float, default=0.05, help="The fake's answer delay.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes.")
    parser.add_argument("--concurrency", type=int, default=8, help="Threads per worker.")
    parser.add_argument(
        "--senders", type=int, default=4, help="CAMPAIGN_FANOUT_SENDERS (the platform default)."
    )
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-send-"))
    fake = FakeGraphApi(args.latency)
    fake_url = fake.start()
    aws_port = free_port()
    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/whatsapp_bench_send"
    )
    env = platform_env(
        work=work,
        database_url=database_url,
        aws_port=aws_port,
        queue_prefix="benchsend",
        PUBLIC_BASE_URL="https://platform.example.test",
        META_GRAPH_API_BASE_URL=fake_url,
        CAMPAIGN_FANOUT_SENDERS=str(args.senders),
    )
    os.environ.update(env)
    processes = Processes(work, env)

    try:
        recreate_database(database_url)
        processes.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(aws_port)])
        wait_port(aws_port)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "setup_queues"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )

        import django

        os.environ["DJANGO_SETTINGS_MODULE"] = "whatsapp_platform.settings"
        django.setup()
        from django.contrib.auth.models import User
        from django.db import connection as db

        from campaigns import services
        from campaigns.models import Campaign, CampaignAudience, MessageTemplate
        from conversations.models import Contact, Message
        from tests.factories import CampaignFactory, ChannelFactory, MessageTemplateFactory

        channel = ChannelFactory(
            phone_number_id=PHONE_NUMBER_ID,
            access_token=ACCESS_TOKEN,
            messages_per_second=args.limit,
            messaging_tier=None,
        )
        template = MessageTemplateFactory(
            channel=channel,
            organization=channel.organization,
            name="order_shipped",
            category=MessageTemplate.Category.UTILITY,
            body="Hello {{1}}, your order {{2}} has shipped.",
        )
        campaign = CampaignFactory(template=template, name="Bench")
        print(f"Importing {args.recipients:,} recipients ...", flush=True)
        contacts = Contact.objects.bulk_create(
            (
                Contact(organization=channel.organization, wa_id=f"4477{n:08d}")
                for n in range(args.recipients)
            ),
            batch_size=5000,
        )
        CampaignAudience.objects.bulk_create(
            (
                CampaignAudience(
                    campaign=campaign,
                    contact=contact,
                    variables={"1": f"Customer {n}", "2": f"#{100000 + n}"},
                )
                for n, contact in enumerate(contacts)
            ),
            batch_size=5000,
        )
        with db.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would after a bulk load
        submitter = User.objects.create_user("bench-sender")
        approver = User.objects.create_superuser("bench-approver")
        services.campaign_submit(campaign_id=campaign.id, user=submitter)
        services.campaign_approve(campaign_id=campaign.id, user=approver)

        worker_command = [
            str(BIN / "celery"), "-A", "whatsapp_platform", "worker", "-Q", "outgoing",
            "--pool", "threads", "--concurrency", str(args.concurrency), "--loglevel", "INFO",
        ]  # fmt: skip
        for n in range(args.workers):
            processes.start(f"worker-{n}", worker_command)
        for n in range(args.workers):
            log = work / f"worker-{n}.log"
            while b" ready." not in log.read_bytes():
                time.sleep(0.05)

        print(
            f"Launching: {args.workers} worker processes x {args.concurrency} threads, "
            f"{args.senders} chunk senders, limit {args.limit}/s, fake answers in "
            f"{args.latency * 1000:.0f} ms",
            flush=True,
        )
        before = cpu_seconds(os.getpid())
        started = time.monotonic()
        services.campaign_launch(campaign_id=campaign.id)
        deadline = started + args.timeout
        last_report = started
        while True:
            status = Campaign.objects.values_list("status", flat=True).get(id=campaign.id)
            if status != Campaign.Status.RUNNING or time.monotonic() > deadline:
                break
            if time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                print(f"  {len(fake.received):,} received ...", flush=True)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        print(
            f"  CPU while sending (of one core): {cpu_split(before, cpu_seconds(os.getpid()), elapsed)}"
        )
        campaign.refresh_from_db()
        statuses = Counter(
            Message.objects.filter(campaign_audience__campaign=campaign).values_list(
                "status", flat=True
            )
        )

        received = sorted(fake.received)
        times = [at for at, _ in received]
        counts = Counter(to for _, to in received)
        duplicates = sum(n - 1 for n in counts.values() if n > 1)
        missed = sum(1 for contact in contacts if contact.wa_id not in counts)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        achieved = (len(times) - 1) / span if span else 0.0
        window = max_in_window(times)
        print()
        print(f"campaign {campaign.status} ({campaign.status_reason or 'no reason'})")
        print(f"messages by status: {json.dumps(dict(statuses))}")
        print(f"received {len(times):,} sends in {span:.2f} s (first to last)")
        print(f"achieved {achieved:.0f} messages/s of a {args.limit}/s limit")
        print(f"most in any one-second window: {window}")
        per_second = Counter(int(at - times[0]) for at in times) if times else Counter()
        print("received in each second:", " ".join(str(per_second[k]) for k in sorted(per_second)))
        print(f"recipients messaged more than once: {duplicates}; never messaged: {missed}")
        print(
            f"RESULT achieved_mps={achieved:.0f} limit_mps={args.limit} "
            f"ratio={achieved / args.limit:.2f} max_window={window} "
            f"duplicates={duplicates} missed={missed}"
        )
    finally:
        processes.stop_all()
        fake.stop()
        from django.db import connections

        connections.close_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
