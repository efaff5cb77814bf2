"""Chaos run (`make chaos`): webhooks and a campaign through crashes and a broker outage.

The whole platform runs as it does in production, each part its own process: gunicorn with
deploy/gunicorn.conf.py, two Celery workers on the `incoming` and `outgoing` queues, beat with
the DatabaseScheduler (the sweeps every SWEEP_INTERVAL_SECONDS), PostgreSQL (the database
`whatsapp_chaos`, recreated) and SQS (a moto server on a free port). Meta is a local fake Graph
API: it counts every send by `to` and, as Meta does, posts a signed `sent` status webhook back
for each message it accepted, carrying our message id in `biz_opaque_callback_data`. A send a
killed worker left `unknown` is either named by that status (the fake got it) or, once no status
has named it for SEND_UNKNOWN_RESEND_AFTER_SECONDS, sent again (the fake never got it).

While a campaign sends to 2,000 recipients, the script posts 10,000 signed Meta webhook
deliveries (inbound messages, and statuses of 2,000 outbound messages shuffled out of order;
one unique delivery in ten is delivered twice), retrying any delivery that is not answered 200,
as Meta does. Meanwhile it kills one worker with SIGKILL twice (restarting it each time) and
takes SQS away for 10 seconds: moto is killed and started again on the same port with empty
queues (`setup_queues` recreates them), so every task on the broker is lost, and only the
sweepers can recover the work from the database.

After everything has drained it checks and prints what a user would notice; the last line is
RESULT events=… lost=… doubled=… unprocessed=… double_sent=… missed=… drain_s=…
and the exit status is 1 if any of lost, doubled, unprocessed, double_sent or missed is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
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
from webhooks.signature import meta_signature  # noqa: E402

ACCESS_TOKEN = "EAAG-chaos-access-token"
APP_SECRET = "chaos-app-secret"
PHONE_NUMBER_ID = "106540352242999"
WABA_ID = "102290129340999"
# The order of a message's status webhooks; each step one second after the one before.
STEPS = ("sent", "delivered", "read")


def meta_body(value: dict[str, Any]) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783999", "phone_number_id": PHONE_NUMBER_ID},
        **value,
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def status_value(
    wamid: str, status: str, timestamp: int, to: str, ours: str = ""
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": to,
        "conversation": {"id": uuid.uuid4().hex, "origin": {"type": "utility"}},
        "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
    }
    if ours:
        item["biz_opaque_callback_data"] = ours
    return {"statuses": [item]}


def inbound_value(wamid: str, wa_id: str, timestamp: int, text: str) -> dict[str, Any]:
    return {
        "contacts": [{"profile": {"name": "Chaos"}, "wa_id": wa_id}],
        "messages": [
            {
                "from": wa_id,
                "id": wamid,
                "timestamp": str(timestamp),
                "type": "text",
                "text": {"body": text},
            }
        ],
    }


async def deliver(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    """POST one signed webhook until it is answered 200, as Meta retries; returns the tries."""
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": meta_signature(body, APP_SECRET),
    }
    tries = 0
    while True:
        tries += 1
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    return tries
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(min(5.0, 0.2 * 2**tries))


class FakeGraphApi:
    """Meta's send endpoint: counts each send by `to`, answers after `latency`, and posts the
    `sent` status webhook of every accepted message back to the platform."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.sent_to: Counter[str] = Counter()
        self.callbacks_pending = 0
        self.callbacks_delivered = 0
        self.webhook_url = ""
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._session: aiohttp.ClientSession | None = None

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return web.json_response(
                {"error": {"message": "Invalid OAuth access token.", "code": 190}}, status=401
            )
        body = await request.json()
        to = str(body["to"])
        self.sent_to[to] += 1
        wamid = f"wamid.CHAOS{uuid.uuid4().hex}"
        self.callbacks_pending += 1
        self.loop.create_task(self._callback(wamid, to, str(body.get("biz_opaque_callback_data"))))
        await asyncio.sleep(self.latency)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid, "message_status": "accepted"}],
            }
        )

    async def _callback(self, wamid: str, to: str, ours: str) -> None:
        await asyncio.sleep(random.uniform(0.2, 2.0))
        body = meta_body(status_value(wamid, "sent", int(time.time()), to, ours))
        assert self._session is not None
        await deliver(self._session, self.webhook_url, body)
        self.callbacks_pending -= 1
        self.callbacks_delivered += 1

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/{version}/{phone_number_id}/messages", self._send)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
        self.loop.run_until_complete(site.start())

        async def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16), timeout=aiohttp.ClientTimeout(total=15)
            )

        self._session = self.loop.run_until_complete(session())
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> str:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"


class WebhookSender:
    """Posts the shuffled deliveries at a steady rate from its own thread and event loop."""

    def __init__(self, url: str, bodies: list[bytes], rate: float) -> None:
        self.url = url
        self.bodies = bodies
        self.rate = rate
        self.posted = 0
        self.retries = 0
        self.done = threading.Event()

    async def _run(self) -> None:
        limit = asyncio.Semaphore(32)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=32), timeout=aiohttp.ClientTimeout(total=15)
        ) as session:

            async def one(body: bytes) -> None:
                async with limit:
                    tries = await deliver(session, self.url, body)
                self.posted += 1
                self.retries += tries - 1

            started = time.monotonic()
            tasks = []
            for index, body in enumerate(self.bodies):
                pause = started + index / self.rate - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                await limit.acquire()  # no more than 32 in flight
                limit.release()
                tasks.append(asyncio.create_task(one(body)))
            await asyncio.gather(*tasks)
        self.done.set()

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="Webhook deliveries posted.")
    parser.add_argument("--outbound", type=int, default=2000, help="Messages given statuses.")
    parser.add_argument("--recipients", type=int, default=2000, help="Campaign audience.")
    parser.add_argument("--rate", type=float, default=200, help="Webhook deliveries a second.")
    parser.add_argument("--limit", type=int, default=50, help="The channel's messages/s.")
    parser.add_argument("--latency", type=float, default=0.05, help="The fake's answer delay.")
    parser.add_argument("--drain-timeout", type=float, default=360)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="Keep the processes' logs.")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)

    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    fake = FakeGraphApi(args.latency)
    fake_url = fake.start()
    sqs_port = free_port()
    web_port = free_port()
    fake.webhook_url = f"http://127.0.0.1:{web_port}/webhooks/meta/"
    database_url = os.environ.get(
        "CHAOS_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/whatsapp_chaos"
    )
    env = platform_env(
        work=work,
        database_url=database_url,
        aws_port=sqs_port,
        queue_prefix="chaos",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{web_port}",
        # A killed worker's unacknowledged tasks come back after this long.
        SQS_VISIBILITY_TIMEOUT="60",
        SQS_MAX_RECEIVE_COUNT="20",
        CELERY_TASK_SOFT_TIME_LIMIT="40",
        CELERY_TASK_TIME_LIMIT="50",
        MESSAGE_SEND_LEASE_SECONDS="60",
        # The fake reports every accepted send within about 2 s; minutes in production.
        SEND_UNKNOWN_RESEND_AFTER_SECONDS="20",
        MESSAGE_REQUEUE_AFTER_SECONDS="10",
        WEBHOOK_REQUEUE_AFTER_SECONDS="20",
        SWEEP_INTERVAL_SECONDS="5",
        LOG_FORMAT="plain",
        PROMETHEUS_MULTIPROC_DIR=str(work / "prometheus"),
        META_GRAPH_API_BASE_URL=fake_url,
        BIND=f"127.0.0.1:{web_port}",
        WEB_CONCURRENCY="2",
        WEB_ACCESS_LOG=str(work / "access.log"),
    )
    os.environ.update(env)
    processes = Processes(work, env)

    manage = [sys.executable, "manage.py"]

    def start_sqs() -> None:
        processes.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(sqs_port)])
        wait_port(sqs_port)
        subprocess.run(
            [*manage, "setup_queues"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )

    def start_worker(n: int) -> None:
        log = work / f"worker-{n}.log"
        offset = log.stat().st_size if log.exists() else 0
        processes.start(
            f"worker-{n}",
            [
                str(BIN / "celery"), "-A", "whatsapp_platform", "worker",
                "-Q", "incoming,outgoing", "--pool", "threads", "--concurrency", "8",
                f"--hostname=chaos{n}@%h", "--loglevel", "INFO",
            ],
            LOG_LEVEL="INFO",  # for the worker's "ready." line
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes()[offset:]:
            if time.monotonic() > deadline:
                raise SystemExit(f"worker-{n} did not start; see {log}")
            time.sleep(0.05)

    # As systemd's Restart=always does (deploy/systemd): a worker that exits on its own, as
    # Celery does on an "unrecoverable" broker error (the queues missing while SQS comes back
    # empty), is started again. The script's own kills are not its business.
    supervised = {"worker-0", "worker-1"}
    supervisor_lock = threading.Lock()
    restarts: Counter[str] = Counter()

    def supervise() -> None:
        while True:
            time.sleep(1)
            with supervisor_lock:
                for name in sorted(supervised):
                    if processes.running[name].poll() is not None:
                        say(f"{name} exited on its own; started again")
                        restarts[name] += 1
                        start_worker(int(name.rsplit("-", 1)[1]))

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {text}", flush=True)

    t0 = time.monotonic()
    try:
        recreate_database(database_url)
        start_sqs()
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)

        import django

        os.environ["DJANGO_SETTINGS_MODULE"] = "whatsapp_platform.settings"
        django.setup()
        from django.contrib.auth.models import User
        from django.db import connection as db

        from campaigns import services
        from campaigns.models import Campaign, CampaignAudience, MessageTemplate
        from conversations.models import Contact, Message, PendingStatus
        from tests.factories import CampaignFactory, ChannelFactory, MessageTemplateFactory
        from webhooks.models import WebhookEvent
        from webhooks.services import dedupe_key

        channel = ChannelFactory(
            phone_number_id=PHONE_NUMBER_ID,
            waba_id=WABA_ID,
            app_secret=APP_SECRET,
            access_token=ACCESS_TOKEN,
            messages_per_second=args.limit,
            messaging_tier=None,
        )
        organization = channel.organization

        # Outbound messages the status webhooks are about, already handed to Meta.
        outbound_contacts = Contact.objects.bulk_create(
            Contact(organization=organization, wa_id=f"4478{n:08d}") for n in range(args.outbound)
        )
        outbound = Message.objects.bulk_create(
            Message(
                organization=organization,
                channel=channel,
                contact=contact,
                direction=Message.Direction.OUTBOUND,
                provider=channel.provider,
                type=Message.Type.TEXT,
                text="Your order has shipped.",
                status=Message.Status.SENT,
                provider_message_id=f"wamid.OUT{n:08d}",
            )
            for n, contact in enumerate(outbound_contacts)
        )

        # Every message gets 1 to 3 steps (sent; sent, delivered; or all three), each one
        # second after the one before; the latest-ranked one is its final status.
        base = int(time.time()) - 3600
        expected: dict[int, dict[str, int]] = {}
        unique: list[bytes] = []
        for n, message in enumerate(outbound):
            taken = STEPS[: (1, 2, 3, 3)[n % 4]]
            expected[message.id] = {step: base + n % 600 + i for i, step in enumerate(taken)}
            for step, at in expected[message.id].items():
                wa_id = outbound_contacts[n].wa_id or ""
                unique.append(meta_body(status_value(f"wamid.OUT{n:08d}", step, at, wa_id)))
        statuses = len(unique)
        inbound_count = max(0, round(args.events / 1.1) - statuses)
        inbound_ids = [f"wamid.IN{n:08d}" for n in range(inbound_count)]
        for n, wamid in enumerate(inbound_ids):
            wa_id = f"4479{n % 1500:08d}"
            unique.append(meta_body(inbound_value(wamid, wa_id, base + n, f"Question {n}")))
        doubled = rng.sample(unique, args.events - len(unique))
        bodies = unique + doubled
        rng.shuffle(bodies)

        template = MessageTemplateFactory(
            channel=channel,
            organization=organization,
            name="order_shipped",
            category=MessageTemplate.Category.UTILITY,
            body="Hello {{1}}, your order {{2}} has shipped.",
        )
        campaign = CampaignFactory(template=template, name="Chaos")
        recipients = Contact.objects.bulk_create(
            Contact(organization=organization, wa_id=f"4477{n:08d}") for n in range(args.recipients)
        )
        CampaignAudience.objects.bulk_create(
            CampaignAudience(
                campaign=campaign,
                contact=contact,
                variables={"1": f"Customer {n}", "2": f"#{100000 + n}"},
            )
            for n, contact in enumerate(recipients)
        )
        with db.cursor() as cursor:
            cursor.execute("ANALYZE")
        submitter = User.objects.create_user("chaos-sender")
        approver = User.objects.create_superuser("chaos-approver")
        services.campaign_submit(campaign_id=campaign.id, user=submitter)
        services.campaign_approve(campaign_id=campaign.id, user=approver)
        db.close()

        processes.start("web", [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "whatsapp_platform.wsgi"])  # fmt: skip
        processes.start("beat", [
            str(BIN / "celery"), "-A", "whatsapp_platform", "beat", "--loglevel", "INFO",
            "--max-interval", "1", "-s", str(work / "beat-schedule"),
        ])  # fmt: skip
        start_worker(0)
        start_worker(1)
        threading.Thread(target=supervise, daemon=True).start()
        wait_port(web_port)
        say(
            f"seed {seed}: {len(bodies):,} deliveries ({len(unique):,} unique: {statuses:,} "
            f"statuses of {args.outbound:,} messages, {inbound_count:,} inbound; "
            f"{len(doubled):,} twice) at {args.rate:.0f}/s; campaign of {args.recipients:,} "
            f"at {args.limit}/s"
        )

        sender = WebhookSender(fake.webhook_url, bodies, args.rate)
        services.campaign_launch(campaign_id=campaign.id)
        sender.start()
        chaos_start = time.monotonic()

        def wait_until(seconds: float) -> None:
            pause = chaos_start + seconds - time.monotonic()
            if pause > 0:
                time.sleep(pause)

        def progress() -> str:
            return f"{sender.posted:,} posted, {sum(fake.sent_to.values()):,} sends at the fake"

        for kill_at, outage_at in ((8, None), (16, None), (None, 24)):
            if kill_at is not None:
                wait_until(kill_at)
                with supervisor_lock:
                    say(f"SIGKILL worker-0 ({progress()})")
                    processes.stop(processes.running["worker-0"], signal.SIGKILL)
                    start_worker(0)
                    say("worker-0 restarted")
            if outage_at is not None:
                wait_until(outage_at)
                say(f"SQS down for 10 s: moto killed, its queues lost ({progress()})")
                processes.stop(processes.running["moto"], signal.SIGKILL)
                time.sleep(10)
                start_sqs()
                say("SQS back, queues recreated empty")
        sender.done.wait()
        say(f"all {sender.posted:,} deliveries answered 200 ({sender.retries:,} retries)")

        # --- Drain ---------------------------------------------------------------------------
        drain_start = time.monotonic()
        deadline = drain_start + args.drain_timeout
        campaign_messages = Message.objects.filter(campaign_audience__campaign=campaign)
        unsettled = (Message.Status.QUEUED, Message.Status.SENDING, Message.Status.UNKNOWN)
        last_report = settled_since = 0.0
        while True:
            left = WebhookEvent.objects.exclude(
                state__in=(WebhookEvent.State.PROCESSED, WebhookEvent.State.IGNORED)
            ).count()
            status = Campaign.objects.values_list("status", flat=True).get(id=campaign.id)
            busy = campaign_messages.filter(status__in=unsettled).count()
            # `unknown` sends not yet sent again wait for the resend; a resent one left
            # `unknown` (its second call also cut short) is never sent a third time.
            unknown = campaign_messages.filter(
                status=Message.Status.UNKNOWN, resent_at__isnull=False
            ).count()
            pending_rows = CampaignAudience.objects.filter(
                campaign=campaign, state=CampaignAudience.State.PENDING
            ).count()
            settled = (
                left == 0 and fake.callbacks_pending == 0 and status == Campaign.Status.COMPLETED
            )
            if settled and busy == 0:
                break
            if settled and busy == unknown:
                # Only `unknown` sends that were sent again are left: nothing more will happen.
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since > 10:
                    break
            else:
                settled_since = 0.0
            if time.monotonic() > deadline:
                say("drain timed out")
                break
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                say(
                    f"draining: {left:,} events unprocessed, campaign {status}, {pending_rows:,} "
                    f"rows pending, {busy:,} messages queued/sending/unknown, "
                    f"{fake.callbacks_pending} callbacks in flight"
                )
            time.sleep(1)
        drain_s = time.monotonic() - drain_start
        say(f"drained in {drain_s:.1f} s")

        # --- Checks --------------------------------------------------------------------------
        keys = {dedupe_key(WebhookEvent.Provider.META, body): body for body in unique}
        stored = Counter(
            WebhookEvent.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)
        )
        not_stored = sum(1 for key in keys if key not in stored)
        stored_twice = sum(n - 1 for n in stored.values() if n > 1)
        inbound = Counter(
            Message.objects.filter(
                organization=organization, provider_message_id__in=inbound_ids
            ).values_list("provider_message_id", flat=True)
        )
        inbound_lost = sum(1 for wamid in inbound_ids if wamid not in inbound)
        columns = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at"}
        wrong_status = wrong_steps = 0
        rows = Message.objects.filter(id__in=expected).values(
            "id", "status", "sent_at", "delivered_at", "read_at"
        )
        for row in rows:
            want_steps = expected[row["id"]]
            if row["status"] != list(want_steps)[-1]:
                wrong_status += 1
            for step, column in columns.items():
                want = want_steps.get(step)
                got = row[column]  # type: ignore[literal-required]
                if (want is None) != (got is None) or (
                    want is not None and got != datetime.fromtimestamp(want, tz=UTC)
                ):
                    wrong_steps += 1
        unprocessed = WebhookEvent.objects.exclude(
            state__in=(WebhookEvent.State.PROCESSED, WebhookEvent.State.IGNORED)
        ).count()
        by_state = Counter(WebhookEvent.objects.values_list("state", flat=True))
        lost = not_stored + inbound_lost + wrong_status + wrong_steps
        doubled_count = stored_twice + sum(n - 1 for n in inbound.values() if n > 1)
        double_sent = sum(n - 1 for n in fake.sent_to.values() if n > 1)
        missed = sum(1 for contact in recipients if contact.wa_id not in fake.sent_to)
        campaign.refresh_from_db()
        campaign_statuses = Counter(campaign_messages.values_list("status", flat=True))
        resent = campaign_messages.filter(resent_at__isnull=False).count()
        recorded_twice = campaign_messages.filter(earlier_provider_message_id__isnull=False).count()

        print()
        print(f"webhook deliveries posted: {sender.posted:,} ({len(unique):,} unique), "
              f"{sender.retries:,} retried after a non-200 answer or no answer")  # fmt: skip
        print(f"sent callbacks from the fake Graph API: {fake.callbacks_delivered:,}")
        print(f"webhook events stored by state: {json.dumps(dict(by_state))}")
        print(f"unique deliveries applied exactly once: {len(unique) - lost - stored_twice:,} "
              f"of {len(unique):,}")  # fmt: skip
        print(f"  not stored: {not_stored}; stored twice: {stored_twice}; inbound messages "
              f"missing: {inbound_lost}")  # fmt: skip
        print(f"final statuses correct: {len(expected) - wrong_status:,} of {len(expected):,}; "
              f"step timestamps wrong or missing: {wrong_steps}")  # fmt: skip
        print(f"events left unprocessed: {unprocessed}; statuses still pending: "
              f"{PendingStatus.objects.count()}")  # fmt: skip
        print(f"campaign {campaign.status}; its messages by status: "
              f"{json.dumps(dict(campaign_statuses))}")  # fmt: skip
        print(f"unknown sends sent again after no status named them: {resent}; recorded as "
              f"sent twice: {recorded_twice}")  # fmt: skip
        print(f"recipients messaged more than once: {double_sent}; never messaged: {missed}")
        print(f"workers that exited on their own and were started again: {dict(restarts)}")
        print(f"time to drain after the last delivery: {drain_s:.1f} s; "
              f"whole run {time.monotonic() - t0:.0f} s")  # fmt: skip
        print(
            f"RESULT events={sender.posted} lost={lost} doubled={doubled_count} "
            f"unprocessed={unprocessed} double_sent={double_sent} missed={missed} "
            f"drain_s={drain_s:.1f}"
        )
        return 1 if (lost or doubled_count or unprocessed or double_sent or missed) else 0
    finally:
        supervised.clear()
        processes.stop_all()
        from django.db import connections

        connections.close_all()
        if args.keep_logs:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
