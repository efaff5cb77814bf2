"""Scale-out benchmark (`make bench-scale`): 1, 2 and 4 Celery worker processes on one SQS queue.

Every worker is its own `celery worker --pool solo` process (one task at a time), as separate
machines would run them, against the same SQS endpoint (a local moto server) and the same
PostgreSQL database (`whatsapp_bench_scale`, recreated). For each worker count, a fresh backlog
of single-status Meta webhook events is stored through `webhook_event_record` and queued while
no worker runs; then the workers start together and drain it. The rate counts the events
processed while all of them were consuming (from the moment the last one was ready), so start-up
time does not count. The CPU split shows where the machine's cores went.

The last line is machine-readable:
RESULT w1=… w2=… w4=… scaling_2=… scaling_4=…
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_ingest import (  # noqa: E402
    APP_SECRET,
    PHONE_NUMBER_ID,
    WABA_ID,
    sent_messages_create,
    status_body,
)
from tests.benchmarks.harness import (  # noqa: E402
    Processes,
    free_port,
    platform_env,
    recreate_database,
    wait_port,
)

BIN = Path(sys.executable).parent
WORKER_COUNTS = (1, 2, 4)
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(
    database: str, worker_pids: set[int], moto_pid: int
) -> dict[int, tuple[str, float]]:
    """CPU seconds of this benchmark's own processes, by pid: its workers, its SQS server and
    the PostgreSQL backends of its database (other processes on the machine are left out)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            continue
        pid = int(stat.parent.name)
        fields = text[text.rindex(")") + 2 :].split()
        parent = int(fields[1])
        if pid in worker_pids or parent in worker_pids:
            part = "workers"
        elif pid == moto_pid:
            part = "sqs (moto)"
        elif cmdline.startswith("postgres:") and f" {database} " in cmdline:
            part = "postgres"
        else:
            continue
        found[pid] = (part, (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every core since boot, every process on the machine counted."""
    values = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each part used in between."""
    parts: dict[str, float] = {}
    for pid, (part, used) in after.items():
        parts[part] = parts.get(part, 0.0) + used - before.get(pid, (part, 0.0))[1]
    return parts


def cpu_split(parts: dict[str, float], seconds: float) -> str:
    ordered = sorted(parts.items(), key=lambda item: -item[1])
    return ", ".join(f"{part} {100 * used / seconds:.0f}%" for part, used in ordered)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000, help="Events per worker count.")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    aws_port = free_port()
    database_url = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/whatsapp_bench_scale"
    )
    env = platform_env(
        work=work, database_url=database_url, aws_port=aws_port, queue_prefix="scale"
    )
    os.environ.update(env)
    processes = Processes(work, env)

    try:
        recreate_database(database_url)
        moto = processes.start(
            "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(aws_port)]
        )
        database = database_url.rsplit("/", 1)[1]
        wait_port(aws_port)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "setup_queues"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )

        import django

        os.environ["DJANGO_SETTINGS_MODULE"] = "whatsapp_platform.settings"
        django.setup()
        from django.db.models import Max

        from conversations.models import Contact
        from tests.factories import ChannelFactory
        from webhooks.dispatch import dispatcher
        from webhooks.models import WebhookEvent
        from webhooks.services import webhook_event_record
        from webhooks.signature import meta_signature

        channel = ChannelFactory(
            phone_number_id=PHONE_NUMBER_ID, waba_id=WABA_ID, app_secret=APP_SECRET
        )
        contact = Contact.objects.create(organization=channel.organization, wa_id="16315551181")
        total = args.events * len(WORKER_COUNTS)
        sent_messages_create(channel, contact, total, "SCALE")

        rates: dict[int, float] = {}
        for round_, workers in enumerate(WORKER_COUNTS):
            # A fresh backlog, stored and queued as the webhook view does, with no worker up.
            first = round_ * args.events
            ids = []
            for n in range(first, first + args.events):
                body = status_body([f"wamid.SCALE{n:08d}"], "delivered")
                event_id = webhook_event_record(
                    provider=WebhookEvent.Provider.META,
                    body=body,
                    kind=WebhookEvent.Kind.STATUSES,
                    organization_id=channel.organization_id,
                    signature=meta_signature(body, APP_SECRET),
                )
                assert event_id is not None
                ids.append(event_id)
            dispatcher.wait_idle(timeout=120)
            backlog = WebhookEvent.objects.filter(id__in=ids)
            assert backlog.filter(state="queued").count() == args.events, "not all were queued"

            started = []
            for index in range(workers):
                name = f"w{workers}-{index}"
                processes.start(
                    name,
                    [
                        str(BIN / "celery"), "-A", "whatsapp_platform", "worker", "-Q", "incoming",
                        "--pool", "solo", f"--hostname={name}@%h", "--loglevel", "INFO",
                    ],
                )  # fmt: skip
                started.append(name)
            while not all(b" ready." in (work / f"{name}.log").read_bytes() for name in started):
                time.sleep(0.02)
            all_ready = datetime.now().astimezone()
            ready_at = time.monotonic()
            pids = {processes.running[name].pid for name in started}
            before, busy_before = process_cpu(database, pids, moto.pid), machine_busy()
            while backlog.filter(state="queued").exists():
                time.sleep(0.1)
            drained_at = time.monotonic()
            used = cpu_used(before, process_cpu(database, pids, moto.pid))
            busy_after = machine_busy()
            machine = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
            for name in started:
                processes.stop(processes.running.pop(name))

            assert not backlog.filter(state="failed").exists(), "some events failed"
            in_window = backlog.filter(processed_at__gte=all_ready)
            last = in_window.aggregate(last=Max("processed_at"))["last"]
            assert last is not None, "no event was processed with every worker consuming"
            rate = in_window.count() / max((last - all_ready).total_seconds(), 1e-3)
            rates[workers] = rate
            print(
                f"{workers} worker process(es): {in_window.count():,} of {args.events:,} events "
                f"processed with all consuming, {rate:.0f} events/s",
                flush=True,
            )
            print(
                f"  CPU while draining (100% = one core): {cpu_split(used, drained_at - ready_at)}",
                flush=True,
            )
            # Flat across worker counts when the workers do not wait on one another.
            print(
                f"  {in_window.count() / max(used.get('workers', 0.0), 1e-3):.0f} events per "
                "second of worker CPU",
                flush=True,
            )
            print(
                f"  the whole machine was {100 * machine:.0f}% busy "
                f"({os.cpu_count()} cores, other users' processes included)",
                flush=True,
            )
            # A stopped worker's last long poll may still hold a message; let it come back.
            time.sleep(float(env["SQS_WAIT_TIME_SECONDS"]) + 1)

        cores = os.cpu_count() or 1
        scaling_2, scaling_4 = rates[2] / rates[1], rates[4] / rates[1]
        print()
        print(f"{cores} cores on this machine; workers, SQS (moto) and PostgreSQL share them.")
        print(f"scaling 1 -> 2 workers: {scaling_2:.2f}x, 1 -> 4 workers: {scaling_4:.2f}x")
        print(
            f"RESULT w1={rates[1]:.0f} w2={rates[2]:.0f} w4={rates[4]:.0f} "
            f"scaling_2={scaling_2:.2f} scaling_4={scaling_4:.2f}"
        )
    finally:
        processes.stop_all()
        from django.db import connections

        connections.close_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
