"""What the benchmark scripts share: free ports, a fresh database, the settings the platform's
processes run with, and those processes themselves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
# Fixed keys for throw-away databases: nothing a run writes outlives it.
SECRET_KEY = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG"
FIELD_ENCRYPTION_KEY = "jmdq1tHqF7sJ5bZ0pP3W6k3nK7fKQ4XoJxqvG2Hk0aA="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"Nothing listens on port {port} after {timeout}s")


def recreate_database(url: str) -> None:
    """Drop and create the PostgreSQL database that `url` names, so a run starts empty."""
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=parts.username,
        password=parts.password,
        dbname="postgres",
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        # FORCE: a backend left by an earlier run's killed process does not block it.
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def platform_env(
    *, work: Path, database_url: str, aws_port: int, queue_prefix: str, **settings: str
) -> dict[str, str]:
    """The environment of the platform's processes in a run: deployed settings (DEBUG off),
    PostgreSQL, SQS on the run's local moto server with queues of its own, warnings only in the
    logs; `settings` adds or overrides."""
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": SECRET_KEY,
        "FIELD_ENCRYPTION_KEY": FIELD_ENCRYPTION_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "sqs://",
        "SQS_ENDPOINT_URL": f"http://127.0.0.1:{aws_port}",
        "SQS_QUEUE_PREFIX": f"{queue_prefix}{int(time.time())}-",
        "SQS_WAIT_TIME_SECONDS": "1",
        "SQS_POLLING_INTERVAL": "0.1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "LOG_LEVEL": "WARNING",
        "ARCHIVE_LOCAL_DIR": str(work / "archive"),
        **settings,
    }


class Processes:
    """The processes a run starts, by name: each leads a session of its own (so stopping it
    stops its children) and writes its output to `<work>/<name>.log`."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Start `command` from the project's root; a name started again appends to its log."""
        log = (self.work / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the process's session; SIGKILL if it is still there after 30 s."""
        if process.poll() is None:
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        """Stop them all, the last started first."""
        for process in reversed(list(self.running.values())):
            self.stop(process)
