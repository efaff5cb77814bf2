"""Configuration: production settings pass Django's deploy checks; missing secrets stop start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x7Lq0v-production-secret-key-with-enough-entropy-9f8e7d6c5b4a3210ZYXW",
    "FIELD_ENCRYPTION_KEY": "jmdq1tHqF7sJ5bZ0pP3W6k3nK7fKQ4XoJxqvG2Hk0aA=",
    "DATABASE_URL": "postgres://platform:secret@db.internal:5432/platform",
    "CELERY_BROKER_URL": "sqs://",
    "ARCHIVE_S3_BUCKET": "platform-archive",
    "ALLOWED_HOSTS": "platform.example.com",
    "PUBLIC_BASE_URL": "https://platform.example.com",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "SQS_ENDPOINT_URL"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_settings_pass_the_deploy_checks() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_the_field_encryption_key() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "FIELD_ENCRYPTION_KEY"}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY must be set when DEBUG is off" in result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_deploy_checks_flag_the_embedded_defaults_in_production() -> None:
    env = {
        k: v for k, v in PRODUCTION.items() if k not in ("CELERY_BROKER_URL", "ARCHIVE_S3_BUCKET")
    }

    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    assert result.returncode != 0
    assert "whatsapp_platform.W001" in result.stderr
    assert "whatsapp_platform.W003" in result.stderr


def test_migrations_match_the_models() -> None:
    result = manage("makemigrations", "--check", "--dry-run", env={})

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_production_environment_passes_the_deploy_checks() -> None:
    from tests.deploy.environment import documented_environment, run_manage

    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING", env=documented_environment()
    )

    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout
