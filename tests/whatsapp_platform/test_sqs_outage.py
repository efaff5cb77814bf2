"""A worker goes on consuming once SQS is reachable again after an outage."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, _database_url, wait_for
from tests.fakes import TcpProxy
from whatsapp_platform.lib.sqs import QueueSetup
from whatsapp_platform.models import Heartbeat
from whatsapp_platform.tasks import record_heartbeat

pytestmark = pytest.mark.django_db(transaction=True)

# A queue only this test's worker consumes, so no other worker can run the task for it.
PROBE_QUEUE = "outage-probe"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_worker_consumes_again_after_sqs_was_unreachable(
    sqs_queues: dict[str, QueueSetup], tmp_path: Path
) -> None:
    # The worker reaches SQS through a proxy that the test can cut.
    proxy = TcpProxy(_free_port(), int(os.environ["TEST_AWS_PORT"]))
    proxy.start()
    log = tmp_path / "worker.log"
    command = [
        str(BIN / "celery"), "-A", "whatsapp_platform", "worker", "-Q", PROBE_QUEUE,
        "--pool", "solo", "--loglevel", "info",
    ]  # fmt: skip
    worker = subprocess.Popen(
        command,
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": _database_url(),
            "CONN_MAX_AGE": "0",
            "LOG_LEVEL": "INFO",
            "SQS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.listen_port}",
            "SQS_WAIT_TIME_SECONDS": "1",
            "SQS_POLLING_INTERVAL": "0.1",
        },
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b" ready." in log.read_bytes(), timeout=60)
        with proxy.down():
            time.sleep(4)  # its long polls fail meanwhile
        record_heartbeat.apply_async(("after-the-outage",), queue=PROBE_QUEUE)

        assert wait_for(
            lambda: Heartbeat.objects.filter(name="after-the-outage").exists(), timeout=30
        )
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        proxy.stop()
