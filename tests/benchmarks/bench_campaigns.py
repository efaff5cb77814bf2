"""Campaign benchmark: a 100,000-row audience import, then statistics and preview at that size,
then the same file through the background path: the request's part (store the file, record the
import) beside the inline import, and the worker's part.

    python tests/benchmarks/bench_campaigns.py [--rows 100000]

Runs on its own PostgreSQL database (BENCH_DATABASE_URL, default the local server's
`wp_campaigns_bench`, recreated). Prints the import's rows per second and the growth of the
process's peak memory, then the median time of campaign_stats and campaign_preview over a
campaign whose recipients all have a message. The last line is machine-readable:
RESULT rows=… import_s=… import_rows_per_s=… peak_rss_growth_mb=… stats_ms=… preview_ms=…
queue_s=… inline_to_queue_ratio=… worker_import_s=…
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.harness import recreate_database  # noqa: E402

DEFAULT_URL = "postgres://postgres:postgres@127.0.0.1:5432/wp_campaigns_bench"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_ms(function, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    # The background import's task is sent to an in-process broker and run here, by hand.
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from campaigns.audience import audience_import, audience_import_queue, audience_import_run
    from campaigns.models import Campaign, CampaignAudience, MessageTemplate
    from campaigns.selectors import campaign_preview
    from campaigns.stats import campaign_stats
    from conversations.models import Message
    from whatsapp_platform.models import Channel, Organization

    call_command("migrate", verbosity=0)
    organization = Organization.objects.create(name="Bench", slug="bench")
    channel = Channel.objects.create(
        organization=organization, provider=Channel.Provider.CONSOLE, sender="whatsapp:+15550001"
    )
    template = MessageTemplate.objects.create(
        organization=organization,
        channel=channel,
        name="promo",
        category=MessageTemplate.Category.MARKETING,
        body="Hi {{1}}, your code is {{2}}.",
        status=MessageTemplate.Status.APPROVED,
    )
    campaign = Campaign.objects.create(
        organization=organization, channel=channel, template=template, name="Bench"
    )

    with tempfile.TemporaryFile() as file:
        file.write(b"\xef\xbb\xbfphone,1,2\n")
        for n in range(args.rows):
            file.write(f"+4479{n:08d},Name {n},CODE{n}\n".encode())
        file_size = file.tell()
        file.seek(0)
        rss_before = _peak_rss_mb()
        started = time.perf_counter()
        report = audience_import(campaign_id=campaign.id, file=file)
        import_s = time.perf_counter() - started
        rss_growth = _peak_rss_mb() - rss_before
    print(
        f"import: {report.rows} rows, {report.imported} imported, {report.invalid_numbers} "
        f"invalid in {import_s:.2f} s ({report.rows / import_s:,.0f} rows/s); peak RSS grew "
        f"{rss_growth:.1f} MB"
    )

    statuses = [
        Message.Status.QUEUED,
        Message.Status.SENT,
        Message.Status.DELIVERED,
        Message.Status.READ,
        Message.Status.FAILED,
    ]
    rng = random.Random(7)  # noqa: S311 - reproducible figures, not secrets
    now = timezone.now()
    contact_ids = list(
        CampaignAudience.objects.filter(campaign=campaign).values_list("contact_id", flat=True)
    )
    Message.objects.bulk_create(
        (
            Message(
                organization=organization,
                channel=channel,
                contact_id=contact_id,
                direction=Message.Direction.OUTBOUND,
                provider=channel.provider,
                type=Message.Type.TEMPLATE,
                status=rng.choice(statuses),
                queued_at=now,
            )
            for contact_id in contact_ids
        ),
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE campaigns_campaignaudience a SET message_id = m.id, state = 'queued' "
            "FROM conversations_message m WHERE m.contact_id = a.contact_id "
            "AND a.campaign_id = %s",
            [campaign.id],
        )
        cursor.execute("ANALYZE")
    stats_ms = _median_ms(lambda: campaign_stats(campaign=campaign))
    preview_ms = _median_ms(lambda: campaign_preview(campaign=campaign))
    stats = campaign_stats(campaign=campaign)
    print(
        f"stats over {stats['recipients']:,} recipients and {stats['messages']:,} messages: "
        f"{stats_ms:.0f} ms median; preview: {preview_ms:.0f} ms median"
    )

    # The background path, last so that the figures above are measured as before. Its contacts
    # exist by now (the inline import wrote them), so its worker part has a little less to do.
    settings.ARCHIVE_S3_BUCKET = ""
    background = Campaign.objects.create(
        organization=organization, channel=channel, template=template, name="Bench background"
    )
    with tempfile.TemporaryDirectory() as archive_dir, tempfile.TemporaryFile() as file:
        settings.ARCHIVE_LOCAL_DIR = Path(archive_dir)
        file.write(b"\xef\xbb\xbfphone,1,2\n")
        for n in range(args.rows):
            file.write(f"+4479{n:08d},Name {n},CODE{n}\n".encode())
        file.seek(0)
        started = time.perf_counter()
        queued = audience_import_queue(campaign_id=background.id, file=file, file_name="b.csv")
        queue_s = time.perf_counter() - started
        started = time.perf_counter()
        audience_import_run(audience_import_id=queued.id)
        worker_s = time.perf_counter() - started
        queued.refresh_from_db()
    assert queued.state == queued.State.SUCCEEDED, queued.error
    assert queued.report is not None
    print(
        f"background import of the same {file_size / 1e6:.1f} MB file: the request's part "
        f"(store and record) {queue_s:.2f} s, {import_s / queue_s:.0f}x less than the inline "
        f"import; the worker's part {worker_s:.2f} s, {queued.report['imported']} imported"
    )
    print(
        f"RESULT rows={report.rows} import_s={import_s:.2f} "
        f"import_rows_per_s={report.rows / import_s:.0f} peak_rss_growth_mb={rss_growth:.1f} "
        f"stats_ms={stats_ms:.0f} preview_ms={preview_ms:.0f} queue_s={queue_s:.3f} "
        f"inline_to_queue_ratio={import_s / queue_s:.0f} worker_import_s={worker_s:.2f}"
    )


if __name__ == "__main__":
    main()
