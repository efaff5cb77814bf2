"""Shared fixtures: a local SQS/S3 endpoint, a real Celery worker, tenants and channels."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
from django.conf import settings

from tests.factories import ChannelFactory, OrganizationFactory, TwilioChannelFactory
from tests.fake_openai import API_KEY as OPENAI_TEST_KEY
from tests.fake_openai import OpenAIState, openai_server
from tests.fakes import ProviderState, TcpProxy, provider_server
from whatsapp_platform.lib.sqs import QueueSetup, ensure_queues
from whatsapp_platform.models import Channel, Organization

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], object], timeout: float = 30, interval: float = 0.1) -> object:
    """Poll until `condition()` is truthy and return it; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {condition}")
        time.sleep(interval)


def _flush_retrying_deadlocks() -> None:
    """The session's worker can still be finishing an earlier test's task while a test's
    database is emptied; PostgreSQL then picks the TRUNCATE as a deadlock victim. Try again."""
    from django.core.management.base import CommandError
    from django.db import OperationalError
    from django.test import TransactionTestCase

    flush = getattr(TransactionTestCase, "_fixture_teardown")  # noqa: B009 (private, untyped)

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                flush(self)
                return
            except (CommandError, OperationalError) as exc:
                if attempt == 4:
                    raise
                sys.stderr.write(f"flush failed ({exc.__cause__ or exc}); trying again\n")
                time.sleep(0.5)

    setattr(TransactionTestCase, "_fixture_teardown", teardown)  # noqa: B010


_flush_retrying_deadlocks()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto in server mode: SQS and S3 over real HTTP, as workers use them."""
    port = int(os.environ["TEST_AWS_PORT"])
    endpoint = f"http://127.0.0.1:{port}"
    process = None
    if _port_open("127.0.0.1", port):
        # A server left from an interrupted run: start from a clean state.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    else:
        process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open("127.0.0.1", port), timeout=30)
    boto3.client("s3", endpoint_url=endpoint, region_name=settings.AWS_REGION).create_bucket(
        Bucket=settings.ARCHIVE_S3_BUCKET
    )
    yield endpoint
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def broker_proxy(aws_endpoint: str) -> Iterator[TcpProxy]:
    """The test process's way to SQS (SQS_ENDPOINT_URL); `broker_proxy.down()` cuts it."""
    port = urlsplit(settings.SQS_ENDPOINT_URL).port
    assert port, "SQS_ENDPOINT_URL needs a port"
    proxy = TcpProxy(port, int(os.environ["TEST_AWS_PORT"]))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def providers() -> Iterator[tuple[str, ProviderState]]:
    """The fake Graph API and Twilio API, shared by the test process and the worker."""
    with provider_server() as (url, state):
        yield url, state


@pytest.fixture
def provider_api(providers: tuple[str, ProviderState], settings: Any) -> ProviderState:
    url, state = providers
    settings.META_GRAPH_API_BASE_URL = url
    settings.TWILIO_API_BASE_URL = url
    settings.TWILIO_CONTENT_API_BASE_URL = url
    state.requests.clear()
    state.meta_templates.clear()
    state.twilio_contents.clear()
    state.listing_answers.clear()
    state.twilio_messages.clear()
    # A test may give the fake another account's credentials: each starts from the defaults.
    state.twilio_auth = ProviderState().twilio_auth
    state.status_webhook_url = ""
    state.statuses_reported.clear()
    return state


@pytest.fixture(scope="session")
def sqs_queues(broker_proxy: TcpProxy) -> dict[str, QueueSetup]:
    """Every work queue with its dead-letter queue, as `setup_queues` creates them."""
    return {queue.name.removeprefix(settings.SQS_QUEUE_PREFIX): queue for queue in ensure_queues()}


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Worker:
    """A real `celery worker` process consuming the SQS queues, on the test database."""

    def __init__(
        self,
        log_path: Path,
        provider_url: str,
        extra_env: dict[str, str] | None = None,
        queues: tuple[str, ...] | None = None,
    ) -> None:
        self.log_path = log_path
        self.provider_url = provider_url
        self.extra_env = extra_env or {}
        self.queues = queues or tuple(settings.WORK_QUEUES)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "CONN_MAX_AGE": "0",
            # Straight to SQS, not through the test process's proxy.
            "SQS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ['TEST_AWS_PORT']}",
            "META_GRAPH_API_BASE_URL": self.provider_url,
            "TWILIO_API_BASE_URL": self.provider_url,
            "TWILIO_CONTENT_API_BASE_URL": self.provider_url,
            **self.extra_env,
        }
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "whatsapp_platform",
                "worker",
                "--queues",
                ",".join(self.queues),
                "--include",
                "tests.celery_tasks",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "info",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: b" ready." in self.log_path.read_bytes(), timeout=60)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.process = None


@pytest.fixture(scope="session")
def openai_fake() -> Iterator[tuple[str, OpenAIState]]:
    """The fake OpenAI API, shared by the test process and the workers (OPENAI_BASE_URL)."""
    with openai_server() as (url, state):
        yield url, state


@pytest.fixture
def openai_api(openai_fake: tuple[str, OpenAIState], settings: Any) -> OpenAIState:
    url, state = openai_fake
    settings.OPENAI_API_KEY = OPENAI_TEST_KEY
    settings.OPENAI_BASE_URL = url
    state.reset()
    return state


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None,
    sqs_queues: dict[str, QueueSetup],
    providers: tuple[str, ProviderState],
    openai_fake: tuple[str, OpenAIState],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """Started once per session, and stopped before the test database is dropped."""
    worker = Worker(
        tmp_path_factory.mktemp("worker") / "worker.log",
        providers[0],
        extra_env={"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": openai_fake[0]},
    )
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def organization() -> Organization:
    return OrganizationFactory(name="Acme")


@pytest.fixture
def meta_channel(organization: Organization) -> Channel:
    return ChannelFactory(organization=organization)


@pytest.fixture
def twilio_channel(organization: Organization) -> Channel:
    return TwilioChannelFactory(organization=organization)
