"""Campaign send benchmark (`make bench-send`).

A campaign of 20,000 recipients on a Meta channel limited to 1,000 messages per second, sent by
two Celery worker processes on the `outgoing` queue (SQS on a local moto server, PostgreSQL)
to a local fake Graph API, in a process of its own, that answers every send after 50 ms.

The audience is imported in bulk, the campaign approved through the services and launched; the
benchmark waits until it has completed. From the times the sends arrived at the fake (stamped
by the kernel, so that the fake's own waits for a core on this small machine do not bunch them
up) it prints the rate achieved (first to last message), the most messages received in any
sliding one-second window (must not exceed the limit), recipients messaged more than once and
recipients never messaged (both must be 0). The last line is machine-readable:

RESULT achieved_mps=… limit_mps=… ratio=… max_window=… duplicates=… missed=…
"""

from __future__ import annotations

import argparse
import bisect
import gc
import heapq
import itertools
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

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


def cpu_seconds(bench_pid: int, fake_pid: int) -> dict[int, tuple[str, float]]:
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
            part = "bench"
        elif pid == fake_pid:
            part = "fake Graph API"
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


# Linux (asm-generic): the kernel stamps each received packet, readable with recvmsg.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = b""
        self.arrived_at = 0.0  # when the first packet of the request being read came in
        self.outbox = b""


class _GraphServer:
    """Meta's send endpoint as a small HTTP/1.1 server (keep-alive, Content-Length bodies):
    each answer `latency` seconds after its request arrived, with hundreds of connections open
    at once. It records when each send arrived and to whom, taking the time the kernel stamped
    on the request's first packet (SO_TIMESTAMPNS), not the time this process got round to
    reading it: on loopback that is when the worker sent it, so the figures are the
    platform's, not this process's waits for a core. `GET /bench/received` hands the records
    over, `GET /bench/count` their number."""

    def __init__(self, port: int, latency: float) -> None:
        self.latency = latency
        self.received: list[tuple[float, str]] = []
        self.selector = selectors.DefaultSelector()
        self.answers: list[tuple[float, int, _Connection, bytes]] = []  # a heap by due time
        self.order = itertools.count()  # breaks ties between answers due at the same time
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # inherited by accept
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)

    def serve_forever(self) -> None:
        while True:
            timeout = max(0.0, self.answers[0][0] - time.time()) if self.answers else None
            for key, events in self.selector.select(timeout):
                if key.fileobj is self.listener:
                    self._accept()
                elif events & selectors.EVENT_READ:
                    self._read(key.data)
                if events & selectors.EVENT_WRITE:
                    self._flush(key.data)
            while self.answers and self.answers[0][0] <= time.time():
                _, _, connection, answer = heapq.heappop(self.answers)
                connection.outbox += answer
                self._flush(connection)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.selector.register(sock, selectors.EVENT_READ, _Connection(sock))

    def _close(self, connection: _Connection) -> None:
        self.selector.unregister(connection.sock)
        connection.sock.close()

    def _read(self, connection: _Connection) -> None:
        try:
            data, ancillary, _, _ = connection.sock.recvmsg(65536, socket.CMSG_SPACE(16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        if not data:
            self._close(connection)
            return
        if not connection.inbox:
            connection.arrived_at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack(value[: _TIMESPEC.size])
                    connection.arrived_at = seconds + nanoseconds / 1e9
        connection.inbox += data
        while b"\r\n\r\n" in connection.inbox:
            head, rest = connection.inbox.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                return  # the body is still on its way
            body, connection.inbox = rest[:length], rest[length:]
            status, answer = self._answer(method, path, headers, body, connection.arrived_at)
            payload = json.dumps(answer).encode()
            response = (
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode() + payload
            due = connection.arrived_at + self.latency if path.endswith("/messages") else 0.0
            heapq.heappush(self.answers, (due, next(self.order), connection, response))
            connection.arrived_at = time.time()

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, arrived_at: float
    ) -> tuple[str, Any]:
        if method == "GET" and path == "/bench/received":
            return "200 OK", self.received
        if method == "GET" and path == "/bench/count":
            return "200 OK", len(self.received)
        if method != "POST" or not path.endswith("/messages"):
            return "404 Not Found", {"error": {"message": "Unknown path.", "code": 100}}
        if headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            error = {"message": "Invalid OAuth access token.", "type": "OAuthException"}
            return "401 Unauthorized", {"error": {**error, "code": 190}}
        to = json.loads(body)["to"]
        self.received.append((arrived_at, to))
        return "200 OK", {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": f"wamid.BENCH{uuid.uuid4().hex}", "message_status": "accepted"}],
        }

    def _flush(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(connection)
            return
        connection.outbox = connection.outbox[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.outbox else 0)
        self.selector.modify(connection.sock, events, connection)


def _fake_graph_api(port: int, latency: float) -> None:
    # Nothing this process builds later lives long: full collections stay short.
    gc.collect()
    gc.freeze()
    _GraphServer(port, latency).serve_forever()


class FakeGraphApi:
    """The fake Graph API (_GraphServer) in a process of its own, as Meta's servers are."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.port = free_port()
        self.process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> str:
        self.process = multiprocessing.get_context("spawn").Process(
            target=_fake_graph_api, args=(self.port, self.latency), daemon=True
        )
        self.process.start()
        wait_port(self.port)
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.load(answer)

    def received(self) -> list[tuple[float, str]]:
        """(arrival time, to) of every send so far."""
        return [(float(at), str(to)) for at, to in self._get("/bench/received")]

    def received_count(self) -> int:
        return int(self._get("/bench/count"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.join(timeout=10)


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
        fake_pid = fake.process.pid if fake.process and fake.process.pid else 0
        before = cpu_seconds(os.getpid(), fake_pid)
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
                print(f"  {fake.received_count():,} received ...", flush=True)
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        print(
            f"  CPU while sending (of one core): {cpu_split(before, cpu_seconds(os.getpid(), fake_pid), elapsed)}"
        )
        campaign.refresh_from_db()
        statuses = Counter(
            Message.objects.filter(campaign_audience__campaign=campaign).values_list(
                "status", flat=True
            )
        )

        received = sorted(fake.received())
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
