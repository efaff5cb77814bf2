"""Media archival: from archive storage or the provider to archived-media/, failures skipped."""

from __future__ import annotations

from io import BytesIO, StringIO
from typing import Any

import pytest
from django.core.management import call_command

from archival.models import ArchiveRun
from conversations.models import MediaAsset
from tests.archival.conftest import make_old
from tests.factories import ChannelFactory, MessageFactory, TwilioChannelFactory
from tests.fakes import ProviderState
from whatsapp_platform.lib.storage import ArchiveStorage

pytestmark = pytest.mark.django_db


def _asset(channel: Any, days: int = 40, **fields: Any) -> MediaAsset:
    message = MessageFactory(channel=channel, direction="in", status="received", type="image")
    asset = MediaAsset.objects.create(organization=channel.organization, message=message, **fields)
    make_old(MediaAsset.objects.filter(id=asset.id), days)
    asset.refresh_from_db()
    return asset


def _read(storage: ArchiveStorage, key: str) -> bytes:
    with storage.open(key) as stream:
        return stream.read()


def test_media_is_streamed_to_archived_media_and_failed_downloads_are_counted_and_skipped(
    storage: ArchiveStorage, provider_api: ProviderState, providers: Any
) -> None:
    base_url = providers[0]
    meta = ChannelFactory()
    twilio = TwilioChannelFactory()
    provider_api.media["1234567890"] = (b"meta-jpeg-bytes", "image/jpeg")
    provider_api.media["ME0001"] = (b"twilio-png-bytes", "image/png")
    from_meta = _asset(meta, provider_media_id="1234567890", filename="holiday photo.jpg")
    from_twilio = _asset(
        twilio,
        url=f"{base_url}/2010-04-01/Accounts/{twilio.account_sid}/Messages/MM0001/Media/ME0001",
    )
    storage.put_stream("media/org=1/old.pdf", BytesIO(b"%PDF stored bytes"))
    from_storage = _asset(
        meta, storage_key="media/org=1/old.pdf", state=MediaAsset.State.STORED, filename="old.pdf"
    )
    expired = _asset(meta, provider_media_id="expired-id")
    gone = _asset(meta, url=f"{base_url}/nothing-here")
    recent = _asset(meta, days=1, provider_media_id="1234567890")

    out = StringIO()
    call_command("archive_media", stdout=out)

    run = ArchiveRun.objects.get(job_type="media")
    assert run.state == "succeeded"
    assert run.failures == 2
    assert run.rows_archived == 3
    for asset, data in (
        (from_meta, b"meta-jpeg-bytes"),
        (from_twilio, b"twilio-png-bytes"),
        (from_storage, b"%PDF stored bytes"),
    ):
        asset.refresh_from_db()
        day = asset.created_at
        assert asset.state == "archived"
        assert asset.storage_key.startswith(
            f"archived-media/year={day:%Y}/month={day:%m}/day={day:%d}/{asset.id}-"
        )
        assert _read(storage, asset.storage_key) == data
        assert asset.size == len(data)
    assert from_meta.storage_key.endswith(f"{from_meta.id}-holiday_photo.jpg")
    # Moved, not copied: the earlier copy is gone.
    assert storage.size("media/org=1/old.pdf") is None
    for asset in (expired, gone):
        asset.refresh_from_db()
        assert asset.state == "pending"
        assert asset.error
    recent.refresh_from_db()
    assert recent.state == "pending"
    assert "2 failures" in out.getvalue()


def test_a_media_dry_run_moves_nothing(
    local_storage: ArchiveStorage, provider_api: ProviderState
) -> None:
    provider_api.media["555"] = (b"bytes", "image/png")
    asset = _asset(ChannelFactory(), provider_media_id="555", size=5)

    call_command("archive_media", "--dry-run", stdout=StringIO())

    asset.refresh_from_db()
    assert asset.state == "pending"
    assert list(local_storage.keys("")) == []
    run = ArchiveRun.objects.get(job_type="media")
    assert run.report["assets"] == 1
    assert not [r for r in provider_api.requests if "555" in r.path]
