"""Media downloads that the provider refuses."""

from __future__ import annotations

import pytest

from conversations.models import MediaAsset
from conversations.services import media_download
from tests.factories import ChannelFactory, MessageFactory
from tests.fakes import ProviderState

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("aws_endpoint")]


def test_a_rejected_token_fails_the_download_and_flags_the_channel(
    provider_api: ProviderState,
) -> None:
    channel = ChannelFactory(access_token="EAAG-expired")
    message = MessageFactory(channel=channel, direction="in", status="received", type="image")
    provider_api.media["1003383421387256"] = (b"jpeg", "image/jpeg")
    asset = MediaAsset.objects.create(
        organization=channel.organization, message=message, provider_media_id="1003383421387256"
    )

    assert media_download(asset_id=asset.id) is None

    asset.refresh_from_db()
    channel.refresh_from_db()
    assert asset.state == "failed"
    assert "401" in asset.error
    assert channel.credential_error
    assert channel.credential_error_at is not None
    assert not [r for r in provider_api.requests if "lookaside" in r.path]


def test_a_retried_download_of_a_stored_asset_does_nothing(provider_api: ProviderState) -> None:
    channel = ChannelFactory()
    message = MessageFactory(channel=channel, direction="in", status="received", type="image")
    provider_api.media["55"] = (b"png-bytes", "image/png")
    asset = MediaAsset.objects.create(
        organization=channel.organization, message=message, provider_media_id="55"
    )

    first = media_download(asset_id=asset.id)
    requests_after_first = len(provider_api.requests)
    second = media_download(asset_id=asset.id)

    assert first is not None
    assert first.state == "stored"
    assert first.size == len(b"png-bytes")
    assert second is None
    assert len(provider_api.requests) == requests_after_first
