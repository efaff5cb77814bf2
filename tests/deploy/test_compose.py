"""deploy/docker-compose.yml: valid for the Compose specification, and a complete deployment.

No Docker engine is needed: the file is checked against the Compose specification's JSON schema
(as check-jsonschema vendors it), the way `docker compose config` validates it.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from django.conf import settings

from tests.deploy.environment import DEPLOY

COMPOSE_PATH = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return dict(json.loads(text.read_text()))


@pytest.fixture
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_PATH.read_text()))


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def queues_of(command: list[str]) -> list[str]:
    return command[command.index("-Q") + 1].split(",")


def test_compose_file_follows_the_compose_specification(compose_schema, compose) -> None:
    assert schema_errors(compose_schema, compose) == []


def test_the_schema_check_catches_a_misspelt_key(compose_schema, compose) -> None:
    compose["services"]["web"]["port"] = compose["services"]["web"].pop("ports")
    compose["services"]["beat"]["restart"] = ["always"]

    errors = schema_errors(compose_schema, compose)

    assert any("'port'" in error for error in errors)
    assert any("['services', 'beat', 'restart']" in error for error in errors)


def test_every_queue_has_exactly_one_worker_service(compose) -> None:
    services = compose["services"]
    workers = {
        name: queues_of(s["command"])
        for name, s in services.items()
        if s.get("command", [])[:4] == ["celery", "-A", "whatsapp_platform", "worker"]
    }

    consumed = [queue for queues in workers.values() for queue in queues]
    assert sorted(consumed) == sorted(settings.WORK_QUEUES)


def test_one_beat_and_the_web_after_postgres_and_migrations(compose) -> None:
    services = compose["services"]
    beats = [s for s in services.values() if "beat" in s.get("command", [])]

    assert len(beats) == 1
    assert beats[0]["deploy"]["replicas"] == 1
    assert services["web"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["web"]["ports"] == ["${WEB_PORT:-8000}:8000"]


def test_every_platform_service_reads_the_production_environment_file(compose) -> None:
    platform = {n: s for n, s in compose["services"].items() if n != "postgres"}

    for name, service in platform.items():
        assert service["env_file"] == [{"path": "platform.env", "required": True}], name
        assert service["environment"]["DATABASE_URL"].endswith("@postgres:5432/platform"), name
        # The filesystem broker and the local archive live on the volume they all share.
        assert "var:/app/var" in service["volumes"], name
    assert (DEPLOY / "platform.env.example").is_file()
