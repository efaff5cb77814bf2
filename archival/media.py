"""Media archival: old media files copied, streaming, to `archived-media/` in archive storage.

An asset comes from where it is: archive storage (downloaded when it arrived), or the provider
(Meta's media URL with the channel's token, Twilio's with the account's credentials, or a plain
URL). A download that fails is counted on the run and skipped; the run goes on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import IO

import requests
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from archival import metrics
from archival.models import ArchiveRun
from archival.services import Heartbeat, Progress, _run_begin, _run_finish, job_lock
from conversations.models import MediaAsset
from whatsapp_platform.lib.providers import meta
from whatsapp_platform.lib.providers.errors import ProviderError
from whatsapp_platform.lib.providers.http import open_download
from whatsapp_platform.lib.providers.twilio import is_account_media_url
from whatsapp_platform.lib.storage import ArchiveStorage, archive_storage
from whatsapp_platform.models import Channel

logger = logging.getLogger(__name__)


def media_archive_key(asset: MediaAsset) -> str:
    day = asset.created_at
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", asset.filename or "")[:100].strip("._") or "media"
    return f"archived-media/year={day:%Y}/month={day:%m}/day={day:%d}/{asset.id}-{name}"


@contextmanager
def _open_source(asset: MediaAsset, storage: ArchiveStorage) -> Iterator[tuple[IO[bytes], str]]:
    if asset.storage_key and asset.state == MediaAsset.State.STORED:
        with storage.open(asset.storage_key) as stream:
            yield stream, asset.mime_type
        return
    channel = asset.message.channel
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    url = asset.url
    if channel.provider == Channel.Provider.META and asset.provider_media_id:
        url = str(meta.media_info(asset.provider_media_id, channel.access_token).get("url", ""))
        headers = meta.auth_headers(channel.access_token)
    elif channel.provider == Channel.Provider.TWILIO and is_account_media_url(
        url, channel.account_sid
    ):
        auth = (channel.account_sid, channel.auth_token)
    if not url:
        raise ProviderError("The media has no URL to download.")
    with open_download(url, headers=headers, auth=auth) as (stream, content_type):
        yield stream, asset.mime_type or content_type


def _due_assets(run: ArchiveRun) -> Q:
    options = run.options or {}
    days = options.get("older_than_days") or settings.MEDIA_THRESHOLD_DAYS
    # An organization's legal hold applies; its message retention does not (media expire).
    cutoff = timezone.now() - timedelta(days=days)
    due = (
        Q(created_at__lt=cutoff)
        & ~Q(organization__legal_hold=True)
        & ~Q(state=MediaAsset.State.ARCHIVED)
    )
    if options.get("organization_id") is not None:
        due &= Q(organization_id=options["organization_id"])
    return due


def media_archive_run(
    *,
    run_id: int,
    budget_seconds: float | None = None,
    heartbeat: Heartbeat | None = None,
    progress: Progress | None = None,
) -> bool:
    """Archive due media assets until done or out of budget; True when the run is settled."""
    with job_lock(ArchiveRun.JobType.MEDIA) as taken:
        if not taken:
            return True
        run = ArchiveRun.objects.filter(id=run_id, state__in=ArchiveRun.ACTIVE_STATES).first()
        if run is None:
            return True
        _run_begin(run)
        started = time.monotonic()
        deadline = started + budget_seconds if budget_seconds else float("inf")
        storage = archive_storage()
        batch_size = (run.options or {}).get("batch_size") or settings.ARCHIVE_BATCH_SIZE
        # Keyset position: failed assets stay due, so the run moves past them.
        after = run.report.get("after_id", 0)
        try:
            while time.monotonic() < deadline:
                assets = list(
                    MediaAsset.objects.filter(_due_assets(run), id__gt=after)
                    .select_related("message__channel")
                    .order_by("id")[: min(batch_size, 100)]
                )
                if not assets:
                    _run_finish(run)
                    return True
                for asset in assets:
                    _archive_asset(run, asset, storage)
                    after = asset.id
                    if progress:
                        progress(1)
                    if heartbeat:
                        heartbeat()
                run.report["after_id"] = after
                ArchiveRun.objects.filter(id=run.id).update(report=run.report)
        except Exception as exc:
            logger.exception("Media archive run %s failed", run.id)
            _run_finish(run, error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            metrics.DURATION.labels(run.job_type).observe(time.monotonic() - started)
        return False


def _archive_asset(run: ArchiveRun, asset: MediaAsset, storage: ArchiveStorage) -> None:
    key = media_archive_key(asset)
    if run.dry_run:
        run.report["assets"] = run.report.get("assets", 0) + 1
        run.report["bytes_estimate"] = run.report.get("bytes_estimate", 0) + (asset.size or 0)
        return
    try:
        with _open_source(asset, storage) as (stream, mime_type):
            stored = storage.put_stream(key, stream, content_type=mime_type)
    except (ProviderError, OSError, BotoCoreError, ClientError, requests.RequestException) as exc:
        # Counted and skipped: the asset stays as it is and is tried again by the next run.
        logger.warning("Media asset %s not archived: %s", asset.id, type(exc).__name__)
        ArchiveRun.objects.filter(id=run.id).update(failures=F("failures") + 1)
        MediaAsset.objects.filter(id=asset.id).update(error=str(exc)[:1000])
        metrics.FAILURES.labels(run.job_type).inc()
        return
    if storage.size(key) != stored.size:
        raise OSError(f"The archived media object {key} does not have the size written.")
    previous = asset.storage_key if asset.state == MediaAsset.State.STORED else ""
    MediaAsset.objects.filter(id=asset.id).update(
        state=MediaAsset.State.ARCHIVED,
        storage_key=key,
        size=stored.size,
        sha256=stored.sha256,
        mime_type=mime_type,
        error="",
        updated_at=timezone.now(),
    )
    ArchiveRun.objects.filter(id=run.id).update(
        rows_archived=F("rows_archived") + 1,
        objects_written=F("objects_written") + 1,
        bytes_written=F("bytes_written") + stored.size,
    )
    if previous and previous != key:
        storage.purge(previous)  # moved: the copy under media/ is no longer needed
    metrics.ROWS.labels(run.job_type).inc()
    metrics.OBJECTS.labels(run.job_type).inc()
    metrics.BYTES.labels(run.job_type).inc(stored.size)
