"""deploy/Procfile and deploy/gunicorn.conf.py: the processes production runs."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import _database_url, wait_for
from tests.deploy.environment import DEPLOY, ROOT
from tests.factories import ChannelFactory

BIN = Path(sys.executable).parent


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name] = shlex.split(command)
    return entries


def test_procfile_runs_a_worker_per_queue_group_one_beat_and_the_web() -> None:
    entries = procfile()
    workers = {
        n: c for n, c in entries.items() if c[:4] == ["celery", "-A", "whatsapp_platform", "worker"]
    }
    beats = [c for c in entries.values() if c[:4] == ["celery", "-A", "whatsapp_platform", "beat"]]

    consumed = [q for c in workers.values() for q in c[c.index("-Q") + 1].split(",")]
    assert sorted(consumed) == sorted(settings.WORK_QUEUES)
    assert len(beats) == 1
    assert entries["web"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "whatsapp_platform.wsgi"]
    # Worker names stay unique when several machines run the same group.
    assert all(
        any(a.startswith("--hostname=") and a.endswith("@%h") for a in c) for c in workers.values()
    )


@pytest.fixture
def gunicorn(transactional_db, tmp_path, unused_port):
    """The web server as deployed, on the test database."""
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "BIND": f"127.0.0.1:{unused_port}",
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "2",
    }
    with _gunicorn_running(env, log):
        base = f"http://127.0.0.1:{unused_port}"
        wait_for(lambda: _answers_ok(base + "/health/", timeout=2), timeout=30)
        yield base, log


@contextmanager
def _gunicorn_running(env: dict[str, str], log: Path) -> Iterator[None]:
    """deploy/gunicorn.conf.py serving the platform until the block ends, then SIGTERM."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "whatsapp_platform.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: b"Booting worker" in log.read_bytes(), timeout=30)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _answers_ok(request: str | urllib.request.Request, *, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_meta_verification_through_gunicorn_keeps_the_token_out_of_the_access_log(
    gunicorn,
) -> None:
    base, log = gunicorn
    ChannelFactory(webhook_verify_token="verify-token-6f1c2d")
    url = (
        f"{base}/webhooks/meta/?hub.mode=subscribe&hub.verify_token=verify-token-6f1c2d"
        "&hub.challenge=1158201444"
    )

    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()

    assert body == b"1158201444"
    wait_for(lambda: b"/webhooks/meta/" in log.read_bytes(), timeout=10)
    access_log = log.read_bytes()
    assert b'"GET /webhooks/meta/ HTTP/1.1" 200' in access_log
    assert b"verify-token-6f1c2d" not in access_log
    assert b"hub.challenge" not in access_log


def test_a_recycled_web_worker_hands_its_stored_events_to_the_broker_first(
    transactional_db, celery_worker, tmp_path, unused_port
) -> None:
    from tests.webhooks.conftest import META_APP_SECRET, PHONE_NUMBER_ID, meta_wire, payload
    from webhooks.models import WebhookEvent
    from webhooks.signature import meta_signature

    ChannelFactory(phone_number_id=PHONE_NUMBER_ID, app_secret=META_APP_SECRET)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "SQS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ['TEST_AWS_PORT']}",
        "BIND": f"127.0.0.1:{unused_port}",
        "WEB_CONCURRENCY": "1",
        "WEB_MAX_REQUESTS": "1",  # the worker exits right after answering the delivery
    }
    log = tmp_path / "gunicorn.log"
    body = meta_wire(payload("meta/text.json"))
    request = urllib.request.Request(
        f"http://127.0.0.1:{unused_port}/webhooks/meta/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": meta_signature(body, META_APP_SECRET),
        },
    )
    with _gunicorn_running(env, log):
        wait_for(lambda: _answers_ok(request, timeout=5), timeout=30)
        # No sweeper runs here: only the exiting worker's own dispatch can get it processed.
        wait_for(
            lambda: WebhookEvent.objects.filter(state=WebhookEvent.State.PROCESSED).exists(),
            timeout=60,
        )
    assert b"Autorestarting worker" in log.read_bytes()
