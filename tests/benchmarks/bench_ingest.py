"""Webhook ingestion benchmark (`make bench-ingest`).

Starts the platform as deployed (gunicorn with deploy/gunicorn.conf.py, PostgreSQL, SQS on a
local moto server, Celery workers) and drives it over loopback with wrk:

1. HTTP: signed Meta status webhooks against POST /webhooks/meta/ and, in the same rounds on
   the same server, the bare view GET /health/, no worker running. Requests/s, p50 and p99
   latency, and the ratio.
2. Processing: one worker process drains 3,000 stored single-status events: events per second.
3. End to end: with that worker running, 2,000 webhooks posted by 8 clients; events per second
   from the first POST to the last event processed.
4. Batches: webhooks of 50 statuses each (Meta batches up to 1,000) drained by one worker
   process: status updates applied per second.

The last line is machine-readable:
RESULT ingest_rps=… bare_rps=… ratio=… p50_ms=… p99_ms=… processed_per_s=… statuses_per_s=…
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

APP_SECRET = "bench-app-secret"
PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"

WRK_SCRIPT = """
local requests = {}
local i = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
counter = 0
function init(args)
  local n = 0
  for line in io.lines(args[1]) do
    if n % tonumber(args[2]) == id then
      local sig, body = line:match("([^\\t]+)\\t(.*)")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/meta/",
        {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig}, body)
    end
    n = n + 1
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
"""


# The processes this run started (each leads a session of its own) and its database: on a
# shared machine, only their CPU is counted.
OWN_SESSIONS: set[int] = set()
OWN_DATABASE = {"name": ""}
# Each process's CPU when last seen, by (pid, start time): one that exits (a recycled gunicorn
# worker, the database backend of a connection closed while idle) stays counted.
_SEEN: dict[tuple[int, int], tuple[str, float]] = {}


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by each part of the set-up, read from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (
                (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / ticks
        own = int(fields[3]) in OWN_SESSIONS
        if text.split(" ")[1].startswith("(postgres"):
            # This run's backends, and the server's own processes (WAL writer, checkpointer).
            if " postgres " in cmdline and f" {OWN_DATABASE['name']} " not in cmdline:
                continue
            part = "postgres"
        elif cmdline.startswith("wrk"):
            part = "wrk"
        elif not own:
            continue
        elif "gunicorn" in cmdline:
            part = "gunicorn"
        elif "moto_server" in cmdline:
            part = "sqs (moto)"
        elif "celery" in cmdline:
            part = "worker"
        else:
            continue
        _SEEN[(int(stat.parent.name), int(fields[19]))] = (part, used)
    for part, used in _SEEN.values():
        totals[part] = totals.get(part, 0.0) + used
    return totals


def cpu_split(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    parts = sorted(after, key=lambda k: -(after[k] - before.get(k, 0.0)))
    return ", ".join(f"{k} {100 * (after[k] - before.get(k, 0.0)) / seconds:.0f}%" for k in parts)


def server_cpu_ms(before: dict[str, float], after: dict[str, float], requests: float) -> float:
    """CPU milliseconds the server side (gunicorn, PostgreSQL, SQS) spent on each request."""
    parts = ("gunicorn", "postgres", "sqs (moto)")
    return 1000 * sum(after.get(k, 0.0) - before.get(k, 0.0) for k in parts) / max(requests, 1)


def profile_run(out: Path, pid: int, run: Callable[[], dict[str, float]], duration: int) -> None:
    """Sample the gunicorn workers (GIL holders only: CPU) during one run; print the top frames."""
    out.mkdir(parents=True, exist_ok=True)
    raw, svg = out / "ingest.txt", out / "ingest.svg"
    for path, fmt in ((raw, "raw"), (svg, "flamegraph")):
        spy = subprocess.Popen(
            [
                str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--gil",
                "--nonblocking", "--nolineno", "--format", fmt, "--duration", str(duration),
                "--output", str(path),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
        run()
        spy.wait(timeout=60)
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    print(f"profile: {total} samples of GIL-holding worker threads; flame graph {svg}")
    for title, table in (("inclusive", inclusive), ("own", own)):
        print(f"  top frames, {title}:")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:25]:
            print(f"    {100 * count / total:5.1f}%  {frame[:110]}")


def parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(errors.group(1)) if errors else 0.0}


def status_body(wamids: list[str], status: str) -> bytes:
    now = str(int(time.time()))
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": [
            {
                "id": wamid,
                "status": status,
                "timestamp": now,
                "recipient_id": "16315551181",
                "conversation": {"id": "c" * 32, "origin": {"type": "utility"}},
                "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
            }
            for wamid in wamids
        ],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode()


def sent_messages_create(channel: Any, contact: Any, count: int, prefix: str) -> None:
    """`count` outbound messages `sent`, whose provider ids `wamid.<prefix><n:08d>` the status
    webhooks name; then the tables are analysed, as autovacuum would after a bulk load."""
    from django.db import connection

    from conversations.models import Message

    print(f"Creating {count:,} outbound messages to receive statuses for ...", flush=True)
    Message.objects.bulk_create(
        (
            Message(
                organization=channel.organization,
                channel=channel,
                contact=contact,
                direction="out",
                provider="meta",
                provider_message_id=f"wamid.{prefix}{n:08d}",
                status="sent",
                text="Your order has shipped.",
            )
            for n in range(count)
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of bare/ingest.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--web-port", type=int, help="gunicorn's port. Default: a free one.")
    parser.add_argument("--aws-port", type=int, help="moto's port. Default: a free one.")
    parser.add_argument("--gunicorn-workers", type=int, help="Default: deploy/gunicorn.conf.py.")
    parser.add_argument("--gunicorn-threads", type=int, help="Default: deploy/gunicorn.conf.py.")
    parser.add_argument("--batch-posts", type=int, default=200, help="Webhooks of 50 statuses.")
    parser.add_argument("--drain-events", type=int, default=3000, help="Events one worker drains.")
    parser.add_argument(
        "--http-only", action="store_true", help="Only the HTTP rounds (1), not processing."
    )
    parser.add_argument(
        "--gunicorn-option",
        action="append",
        default=[],
        help="A further gunicorn option for the one server of both views (repeatable).",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="After the rounds, one more webhook run under py-spy: its flame graph goes here.",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    aws_port, web_port = args.aws_port or free_port(), args.web_port or free_port()
    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/whatsapp_bench"
    )
    env = platform_env(
        work=work, database_url=database_url, aws_port=aws_port, queue_prefix="bench"
    )
    os.environ.update(env)
    processes = Processes(work, env)

    def start(command: list[str], name: str) -> subprocess.Popen[bytes]:
        process = processes.start(name, command)
        OWN_SESSIONS.add(process.pid)
        return process

    def stop(process: subprocess.Popen[bytes]) -> None:
        processes.stop(process)
        # A stopped worker's last long poll can still take a message on the server side; it
        # comes back only after the visibility timeout. Let that poll end before going on.
        time.sleep(float(env["SQS_WAIT_TIME_SECONDS"]) + 1)

    try:
        OWN_DATABASE["name"] = database_url.rsplit("/", 1)[1]
        recreate_database(database_url)

        start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(aws_port)], "moto")
        wait_port(aws_port)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "setup_queues"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )

        import django

        os.environ["DJANGO_SETTINGS_MODULE"] = "whatsapp_platform.settings"
        django.setup()
        from conversations.models import Contact, Message
        from tests.factories import ChannelFactory
        from webhooks.models import WebhookEvent
        from webhooks.signature import meta_signature

        channel = ChannelFactory(
            phone_number_id=PHONE_NUMBER_ID, waba_id=WABA_ID, app_secret=APP_SECRET
        )
        contact = Contact.objects.create(organization=channel.organization, wa_id="16315551181")
        per_run = 40_000
        total = per_run * args.rounds + args.drain_events + 2000 + 50 * args.batch_posts
        if args.http_only:
            total = 0  # nothing is processed: the statuses need no messages
        sent_messages_create(channel, contact, total, "BENCH")

        gunicorn = start(
            [
                str(BIN / "gunicorn"), "whatsapp_platform.wsgi", "-c", "deploy/gunicorn.conf.py",
                "-b", f"127.0.0.1:{web_port}",
                *(["-w", str(args.gunicorn_workers)] if args.gunicorn_workers else []),
                *(["--threads", str(args.gunicorn_threads)] if args.gunicorn_threads else []),
                *args.gunicorn_option,
            ],
            "gunicorn",
        )  # fmt: skip
        wait_port(web_port)
        lua = work / "signed.lua"
        lua.write_text(WRK_SCRIPT)
        base = f"http://127.0.0.1:{web_port}"
        urllib.request.urlopen(base + "/health/").read()  # warm

        def wrk(url: str, *extra: str) -> dict[str, float]:
            command = [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "--latency",
                url,
                *extra,
            ]
            return parse_wrk(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout
            )

        bare_runs, ingest_runs = [], []
        for round_ in range(args.rounds):
            requests_file = work / f"requests-{round_}.tsv"
            with requests_file.open("w") as out:
                for n in range(per_run):
                    body = status_body([f"wamid.BENCH{round_ * per_run + n:08d}"], "delivered")
                    out.write(f"{meta_signature(body, APP_SECRET)}\t{body.decode()}\n")
            before = cpu_seconds()
            bare_runs.append(wrk(base + "/health/"))
            after = cpu_seconds()
            bare_split = cpu_split(before, after, args.duration)
            bare_cpu = server_cpu_ms(before, after, bare_runs[-1]["rps"] * args.duration)
            before = cpu_seconds()
            ingest_runs.append(
                wrk(base + "/webhooks/meta/", "-s", str(lua), "--", str(requests_file), "2")
            )
            after = cpu_seconds()
            split = cpu_split(before, after, args.duration)
            ingest_cpu = server_cpu_ms(before, after, ingest_runs[-1]["rps"] * args.duration)
            print(
                f"round {round_ + 1}: bare {bare_runs[-1]['rps']:.0f} req/s, "
                f"webhook {ingest_runs[-1]['rps']:.0f} req/s; server CPU a request (gunicorn, "
                f"postgres, moto): bare {bare_cpu:.2f} ms, webhook {ingest_cpu:.2f} ms "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            print(f"  CPU during the bare run (of one core): {bare_split}", flush=True)
            print(f"  CPU during the webhook run (of one core): {split}", flush=True)
        errors = sum(run["errors"] for run in ingest_runs + bare_runs)
        if args.profile:
            # New bodies (`read`, not `delivered`): stored, not answered as redeliveries.
            requests_file = work / "requests-profile.tsv"
            with requests_file.open("w") as out:
                for n in range(per_run):
                    body = status_body([f"wamid.BENCH{n:08d}"], "read")
                    out.write(f"{meta_signature(body, APP_SECRET)}\t{body.decode()}\n")
            profile_run(
                args.profile,
                gunicorn.pid,
                lambda: wrk(
                    base + "/webhooks/meta/", "-s", str(lua), "--", str(requests_file), "2"
                ),
                args.duration,
            )

        def median(runs: list[dict[str, float]], key: str) -> float:
            return statistics.median(run[key] for run in runs)

        ingest_rps, bare_rps = median(ingest_runs, "rps"), median(bare_runs, "rps")
        print(f"stored {WebhookEvent.objects.count():,} events ({errors:.0f} non-2xx answers)")
        if args.http_only:
            print(
                f"RESULT ingest_rps={ingest_rps:.0f} bare_rps={bare_rps:.0f} "
                f"ratio={ingest_rps / bare_rps:.2f} p50_ms={median(ingest_runs, 'p50'):.2f} "
                f"p99_ms={median(ingest_runs, 'p99'):.2f}"
            )
            return
        # The HTTP rounds measured ingestion only: their events leave the queue unprocessed.
        from whatsapp_platform.lib.sqs import queue_name, sqs_client

        client = sqs_client()
        client.purge_queue(
            QueueUrl=client.get_queue_url(QueueName=queue_name("incoming"))["QueueUrl"]
        )
        WebhookEvent.objects.update(state="ignored")

        def post(body: bytes) -> None:
            request = urllib.request.Request(
                base + "/webhooks/meta/",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": meta_signature(body, APP_SECRET),
                },
            )
            urllib.request.urlopen(request).read()

        # One worker process drains single-status events stored while it was stopped.
        offset = per_run * args.rounds
        events = args.drain_events
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    post,
                    (
                        status_body([f"wamid.BENCH{offset + n:08d}"], "delivered")
                        for n in range(events)
                    ),
                )
            )
        offset += events
        worker_command = [
            str(BIN / "celery"), "-A", "whatsapp_platform", "worker", "-Q", "incoming", "--pool", "solo",
            "--loglevel", "INFO",
        ]  # fmt: skip

        def start_worker(name: str) -> tuple[subprocess.Popen[bytes], float]:
            """A worker process, and the moment it is ready to consume."""
            process = start(worker_command, name)
            log = work / f"{name}.log"
            while b" ready." not in log.read_bytes():
                time.sleep(0.05)
            return process, time.monotonic()

        before = cpu_seconds()
        worker, drain_started = start_worker("worker")
        while WebhookEvent.objects.filter(state="queued").exists():
            time.sleep(0.5)
        drained = time.monotonic()
        print(
            f"  CPU while draining: {cpu_split(before, cpu_seconds(), drained - drain_started)}",
            flush=True,
        )
        processed_per_s = events / (drained - drain_started)
        assert not WebhookEvent.objects.filter(state="failed").exists(), "some events failed"

        # End to end, with the worker running: from the first POST to the last event processed.
        end_to_end = [status_body([f"wamid.BENCH{offset + n:08d}"], "read") for n in range(2000)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(post, end_to_end))
        while WebhookEvent.objects.filter(state="queued").exists():
            time.sleep(0.05)
        end_to_end_per_s = len(end_to_end) / (time.monotonic() - started)
        stop(worker)

        # Batches of 50 statuses, queued first, then drained by one worker process.
        offset += len(end_to_end)
        for n in range(args.batch_posts):
            post(status_body([f"wamid.BENCH{offset + n * 50 + k:08d}" for k in range(50)], "read"))
        worker, started = start_worker("worker-batches")
        while WebhookEvent.objects.filter(state="queued").exists():
            time.sleep(0.2)
        statuses_per_s = 50 * args.batch_posts / (time.monotonic() - started)
        stop(worker)
        read = Message.objects.filter(status="read").count()
        assert read == 50 * args.batch_posts + len(end_to_end), f"{read} statuses applied"

        print()
        print(f"{'':24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        print(
            f"{'bare view /health/':24}{bare_rps:>10.0f}{median(bare_runs, 'p50'):>10.2f}{median(bare_runs, 'p99'):>10.2f}"
        )
        print(
            f"{'webhook /webhooks/meta/':24}{ingest_rps:>10.0f}{median(ingest_runs, 'p50'):>10.2f}{median(ingest_runs, 'p99'):>10.2f}"
        )
        print(f"throughput ratio webhook/bare: {ingest_rps / bare_rps:.2f}")
        print(
            f"one worker process drained {events:,} single-status events at {processed_per_s:.0f}/s"
        )
        print(f"end to end, first POST to last processed: {end_to_end_per_s:.0f} events/s")
        print(
            f"one worker process applied {50 * args.batch_posts:,} batched statuses at {statuses_per_s:.0f}/s"
        )
        print(
            f"RESULT ingest_rps={ingest_rps:.0f} bare_rps={bare_rps:.0f} ratio={ingest_rps / bare_rps:.2f} "
            f"p50_ms={median(ingest_runs, 'p50'):.2f} p99_ms={median(ingest_runs, 'p99'):.2f} "
            f"processed_per_s={processed_per_s:.0f} statuses_per_s={statuses_per_s:.0f}"
        )
    finally:
        processes.stop_all()
        from django.db import connections

        connections.close_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
