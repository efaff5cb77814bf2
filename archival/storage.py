"""Setting up archive storage: the S3 bucket's protection, versioning and lifecycle."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from whatsapp_platform.lib.storage import LocalStorage, S3Storage, archive_storage

ARCHIVED_PREFIXES = ("archived-messages/", "archived-media/")


def lifecycle_rules(retention_years: int) -> list[dict[str, Any]]:
    """Standard-IA after 30 days, Glacier after 90, Deep Archive after 270, expiry after
    `retention_years`; versions replaced or deleted (erasure, restore) go after 30 days."""
    return [
        {
            "ID": f"archive-{prefix.rstrip('/')}",
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Transitions": [
                {"Days": 30, "StorageClass": "STANDARD_IA"},
                {"Days": 90, "StorageClass": "GLACIER"},
                {"Days": 270, "StorageClass": "DEEP_ARCHIVE"},
            ],
            "Expiration": {"Days": 365 * retention_years},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        }
        for prefix in ARCHIVED_PREFIXES
    ]


def archive_storage_setup() -> dict[str, Any]:
    """Create the bucket if needed, block public access, turn on default encryption and
    versioning, and set the lifecycle. Safe to run again. A local folder is just created."""
    storage = archive_storage()
    if isinstance(storage, LocalStorage):
        storage.root.mkdir(parents=True, exist_ok=True)
        return {"backend": "local", "path": str(storage.root)}
    assert isinstance(storage, S3Storage)
    client, bucket = storage.client, storage.bucket
    created = False
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError:
        if settings.AWS_REGION == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={"LocationConstraint": settings.AWS_REGION},  # type: ignore[typeddict-item]
            )
        created = True
    client.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={"Rules": lifecycle_rules(settings.ARCHIVE_RETENTION_YEARS)},  # type: ignore[typeddict-item]
    )
    return {"backend": "s3", "bucket": bucket, "created": created}
