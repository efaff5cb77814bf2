"""Archival benchmark: 1,000,000 messages archived to the local folder backend.

    make bench-archive            # or: python tests/benchmarks/bench_archive.py [--rows 1000000]

Runs on its own PostgreSQL database (BENCH_DATABASE_URL, default the local server's
`whatsapp_bench_archive`, recreated). Loads the messages with COPY (50 organizations, 20,000
contacts, 4-14 words of chat, a pricing object, spread over 90 days past the threshold), then on
the same rows measures PostgreSQL's own `COPY (SELECT ...) TO STDOUT | gzip -N` (N =
ARCHIVE_GZIP_LEVEL, the level archival writes at), then archives them all in a separate process,
whose peak RSS is reported. The last line is machine-readable:
RESULT rows_per_s=… copy_rows_per_s=… ratio=… peak_rss_mb=…
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.harness import recreate_database  # noqa: E402

DEFAULT_URL = "postgres://postgres:postgres@127.0.0.1:5432/whatsapp_bench_archive"
WORDS = [
    "hola",
    "gracias",
    "pedido",
    "envío",
    "cuando",
    "llega",
    "mañana",
    "hello",
    "thanks",
    "order",
    "shipped",
    "when",
    "arrives",
    "tomorrow",
    "please",
    "help",
    "my",
    "package",
    "number",
    "quiero",
    "cambiar",
    "dirección",
    "invoice",
    "refund",
    "sí",
    "no",
    "ok",
    "bien",
    "perfecto",
    "great",
    "see",
    "you",
    "soon",
    "buenos",
    "días",
    "good",
    "morning",
]
STATUSES = ("sent", "delivered", "read", "failed")


def _setup_django(url: str, archive_dir: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["ARCHIVE_S3_BUCKET"] = ""
    os.environ["ARCHIVE_LOCAL_DIR"] = archive_dir
    os.environ["DEBUG"] = "false"  # as deployed: no query log kept in memory
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production-0123456789abcdef")
    os.environ.setdefault("FIELD_ENCRYPTION_KEY", "jmdq1tHqF7sJ5bZ0pP3W6k3nK7fKQ4XoJxqvG2Hk0aA=")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
    import django

    django.setup()


class _Rows(io.RawIOBase):
    """COPY input generated on the fly: memory stays flat whatever the row count."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray) -> int:  # type: ignore[override]
        while len(self.buffer) < len(target):
            chunk = "".join(line for _, line in zip(range(2000), self.lines, strict=False))
            if not chunk:
                break
            self.buffer += chunk.encode()
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size


def _message_lines(
    rows: int, orgs: list[tuple[int, int]], contacts: dict[int, list[int]]
) -> Iterator[str]:
    rng = random.Random(42)  # noqa: S311 (test data)
    now = time.time()
    for i in range(rows):
        org_id, channel_id = orgs[i % len(orgs)]
        contact_id = rng.choice(contacts[org_id])
        created = now - (100 + rng.random() * 90) * 86400
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created)) + f".{i % 1000000:06d}+00"
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        status = STATUSES[i % 4]
        billing = json.dumps(
            {
                "pricing": {"billable": True, "pricing_model": "PMP", "category": "utility"},
                "conversation": {"id": f"c{rng.getrandbits(64):x}", "origin": {"type": "utility"}},
            }
        )
        wamid = f"wamid.HBgL{rng.getrandbits(96):024X}"
        yield (
            f"{org_id}\t{channel_id}\t{contact_id}\tout\tmeta\t{wamid}\ttext\t{text}\t{{}}\t{status}"
            f"\t5\t1\t\t\t{billing}\t{stamp}\t{stamp}\n"
        )


def load(rows: int) -> None:
    from django.db import connection

    from whatsapp_platform.models import Channel, Organization

    orgs = []
    for n in range(50):
        org = Organization.objects.create(name=f"Org {n}", slug=f"org-{n}")
        channel = Channel.objects.create(
            organization=org, provider="meta", phone_number_id=f"1065{n:08d}", access_token="t"
        )
        orgs.append((org.id, channel.id))
    contacts: dict[int, list[int]] = {}
    with connection.cursor() as cursor:
        for org_id, _ in orgs:
            cursor.execute(
                "INSERT INTO conversations_contact (organization_id, wa_id, username, profile_name,"
                " created_at, updated_at) SELECT %s, (15550000000 + %s * 1000 + g)::text, '', '',"
                " now(), now() FROM generate_series(1, 400) g RETURNING id",
                [org_id, org_id],
            )
            contacts[org_id] = [row[0] for row in cursor.fetchall()]
        columns = (
            "organization_id, channel_id, contact_id, direction, provider, provider_message_id,"
            " type, text, content, status, priority, attempts, error_code, error_message, billing,"
            " created_at, updated_at"
        )
        raw = cursor.cursor  # psycopg2's own cursor, for COPY FROM STDIN
        raw.copy_expert(
            f"COPY conversations_message ({columns}) FROM STDIN",
            io.BufferedReader(_Rows(_message_lines(rows, orgs, contacts)), 1 << 20),  # type: ignore[type-var]
        )
        cursor.execute("VACUUM ANALYZE conversations_message")


def copy_rate(url: str, level: int) -> tuple[float, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM conversations_message")
        rows = cursor.fetchone()[0]
    query = "COPY (SELECT * FROM conversations_message) TO STDOUT"
    started = time.perf_counter()
    psql = subprocess.Popen(["psql", url, "-X", "-q", "-c", query], stdout=subprocess.PIPE)
    gzip = subprocess.run(
        ["gzip", f"-{level}"], stdin=psql.stdout, stdout=subprocess.PIPE, check=True
    )
    psql.wait()
    elapsed = time.perf_counter() - started
    return rows / elapsed, len(gzip.stdout)


def archive_only() -> None:
    """The archiving process: one run over every due row, then its figures as JSON."""
    from archival.models import ArchiveRun
    from archival.services import archive_messages_run, archive_run_create

    run = archive_run_create(job_type=ArchiveRun.JobType.MESSAGES, triggered_by="command")
    started = time.perf_counter()
    archive_messages_run(run_id=run.id)
    elapsed = time.perf_counter() - started
    run.refresh_from_db()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": run.rows_archived,
                "seconds": elapsed,
                "bytes": run.bytes_written,
                "objects": run.objects_written,
                "state": run.state,
                "peak_rss_mb": peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--archive-only", action="store_true")
    parser.add_argument("--archive-dir")
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if args.archive_only:
        _setup_django(url, args.archive_dir)
        archive_only()
        return
    archive_dir = tempfile.mkdtemp(prefix="bench-archive-")
    recreate_database(url)
    _setup_django(url, archive_dir)
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    load(args.rows)
    print(f"Loaded {args.rows:,} messages in {time.perf_counter() - started:.1f} s")
    level = settings.ARCHIVE_GZIP_LEVEL
    copy_rows_per_s, copy_bytes = copy_rate(url, level)
    print(
        f"COPY (SELECT ...) TO STDOUT | gzip -{level}: {copy_rows_per_s:,.0f} rows/s, {copy_bytes / 1e6:.1f} MB"
    )
    from django.db import connection

    connection.close()
    child = subprocess.run(
        [sys.executable, __file__, "--archive-only", "--archive-dir", archive_dir],
        env={**os.environ, "BENCH_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    rows_per_s = figures["rows"] / figures["seconds"]
    ratio = rows_per_s / copy_rows_per_s
    print(
        f"Archived {figures['rows']:,} rows in {figures['seconds']:.1f} s ({figures['state']}): "
        f"{rows_per_s:,.0f} rows/s, {figures['objects']} objects, {figures['bytes'] / 1e6:.1f} MB, "
        f"verified and deleted; peak RSS {figures['peak_rss_mb']:.0f} MB"
    )
    print(
        f"RESULT rows_per_s={rows_per_s:.0f} copy_rows_per_s={copy_rows_per_s:.0f} "
        f"ratio={ratio:.2f} peak_rss_mb={figures['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
