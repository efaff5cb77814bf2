"""Archive storage: one small interface, two backends (S3, or a local folder by default).

Objects are streamed in and out, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import boto3
from django.conf import settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class _HashingReader:
    """Wraps a stream and counts and hashes what is read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.size += len(data)
        self.digest.update(data)
        return data


class ArchiveStorage(Protocol):
    def put_stream(self, key: str, stream: IO[bytes], content_type: str = "") -> StoredObject: ...
    def open(self, key: str) -> IO[bytes]: ...
    def size(self, key: str) -> int | None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...
    def stat(self, key: str) -> StoredObject | None: ...
    def purge(self, key: str, keep_latest: bool = False) -> None: ...


def _stat_stream(key: str, stream: IO[bytes]) -> StoredObject:
    """Size and SHA-256 of an object, read back in chunks."""
    digest = hashlib.sha256()
    size = 0
    with stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return StoredObject(key, size, digest.hexdigest())


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"Storage key outside the archive: {key!r}")
        return path

    def put_stream(self, key: str, stream: IO[bytes], content_type: str = "") -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        reader = _HashingReader(stream)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as out:
            shutil.copyfileobj(reader, out, CHUNK)  # type: ignore[misc]
        partial.replace(path)  # appears whole or not at all
        return StoredObject(key, reader.size, reader.digest.hexdigest())

    def open(self, key: str) -> IO[bytes]:
        return self._path(key).open("rb")

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.exists() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root.resolve()
        for path in sorted(base.rglob("*")):
            key = path.relative_to(base).as_posix()
            if path.is_file() and key.startswith(prefix) and not key.endswith(".partial"):
                yield key

    def stat(self, key: str) -> StoredObject | None:
        """What is stored under `key`, read back from the disk; None when nothing is."""
        path = self._path(key)
        if not path.exists():
            return None
        return _stat_stream(key, path.open("rb"))

    def purge(self, key: str, keep_latest: bool = False) -> None:
        if not keep_latest:
            self.delete(key)


class S3Storage:
    def __init__(self, bucket: str, client: S3Client) -> None:
        self.bucket = bucket
        self.client = client

    def put_stream(self, key: str, stream: IO[bytes], content_type: str = "") -> StoredObject:
        reader = _HashingReader(stream)
        extra: dict[str, str] = {"ServerSideEncryption": "AES256"}
        if content_type:
            extra["ContentType"] = content_type
        self.client.upload_fileobj(reader, self.bucket, key, ExtraArgs=extra)  # type: ignore[arg-type]
        return StoredObject(key, reader.size, reader.digest.hexdigest())

    def open(self, key: str) -> IO[bytes]:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]  # type: ignore[return-value]

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def stat(self, key: str) -> StoredObject | None:
        """What S3 holds under `key`, read back in full; None when nothing is."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return _stat_stream(key, body)  # type: ignore[arg-type]

    def purge(self, key: str, keep_latest: bool = False) -> None:
        """Delete every version of `key` (but the current one with `keep_latest`), so that
        nothing older stays in a versioned bucket."""
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key):
            versions = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                if item["Key"] == key and not (keep_latest and item.get("IsLatest"))
            ]
            if versions:
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": versions, "Quiet": True},  # type: ignore[typeddict-item]
                )


@cache
def _storage(bucket: str, endpoint: str | None, root: str) -> ArchiveStorage:
    if bucket:
        client = boto3.client("s3", region_name=settings.AWS_REGION, endpoint_url=endpoint)
        return S3Storage(bucket, client)
    return LocalStorage(Path(root))


def archive_storage() -> ArchiveStorage:
    """The configured archive storage: S3 when ARCHIVE_S3_BUCKET is set, else a local folder."""
    return _storage(
        settings.ARCHIVE_S3_BUCKET, settings.S3_ENDPOINT_URL, str(settings.ARCHIVE_LOCAL_DIR)
    )
