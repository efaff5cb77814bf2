"""Archive storage: one small interface, two backends (S3, or a local folder by default).

Objects are streamed in and out, never held whole in memory.
"""

from __future__ import annotations

import hashlib
import os
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
    md5: str = ""  # of the bytes sent, which S3 compares with the ETag of a single-part upload


class _HashingReader:
    """Wraps a stream and counts and hashes what is read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.size = 0
        self.digest = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.size += len(data)
        self.digest.update(data)
        self.md5.update(data)
        return data

    def stored(self, key: str) -> StoredObject:
        return StoredObject(key, self.size, self.digest.hexdigest(), self.md5.hexdigest())


class ArchiveStorage(Protocol):
    def put_stream(self, key: str, stream: IO[bytes], content_type: str = "") -> StoredObject: ...
    def open(self, key: str) -> IO[bytes]: ...
    def size(self, key: str) -> int | None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...
    def stat(self, key: str) -> StoredObject | None: ...
    def purge(self, key: str, keep_latest: bool = False) -> None: ...
    def confirm(self, written: StoredObject) -> bool: ...


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
            # On disk before it is named, and named before the caller deletes the source.
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)  # appears whole or not at all
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return reader.stored(key)

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

    def confirm(self, written: StoredObject) -> bool:
        """The object `put_stream` wrote is in place at its size. Its bytes were hashed as they
        were written and synced to disk, so reading them back (from the page cache) would prove
        nothing more."""
        size = self.size(written.key)
        return size == written.size


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
        return reader.stored(key)

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

    def confirm(self, written: StoredObject) -> bool:
        """S3 holds what `put_stream` sent. The upload's checksum made S3 check the bytes in
        transit; for a single-part upload with S3-managed encryption the ETag is the MD5 of the
        stored bytes, so a HEAD vouches for them. Any other ETag (multipart, other encryption,
        another store) vouches for nothing: then the object is read back and hashed."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=written.key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        if int(head["ContentLength"]) != written.size:
            return False
        if written.md5 and head.get("ETag", "").strip('"') == written.md5:
            return True
        stored = self.stat(written.key)
        return stored is not None and stored.sha256 == written.sha256

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
