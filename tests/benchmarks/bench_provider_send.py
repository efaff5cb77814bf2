"""Provider send benchmark: how many sends a second one process gets through each backend.

Runs the Meta and Twilio backends against the local fake APIs of tests/fakes.py (over
loopback, with HTTP keep-alive as the real APIs have), from 8 threads, and, for reference,
plain `requests.post` with a new connection per send. No database is needed: the channels are
unsaved rows.

    .venv/bin/python tests/benchmarks/bench_provider_send.py [--sends 2000] [--threads 8]

The last line is machine-readable: RESULT meta_per_s=… twilio_per_s=… new_connection_per_s=…
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
os.environ.setdefault("PUBLIC_BASE_URL", "https://platform.example.test")

import django

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from tests.fakes import ProviderState, _Handler, _Server  # noqa: E402
from whatsapp_platform.lib.providers.base import OutboundMessage, backend_for  # noqa: E402
from whatsapp_platform.models import Channel  # noqa: E402


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm and delayed ACKs
    # hold each answer on a kept-alive connection for 40 ms.
    disable_nagle_algorithm = True


def _rate(sends: int, threads: int, send_one: Callable[[int], object]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send_one, range(sends)))
    return sends / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    server = _Server(("127.0.0.1", 0), _KeepAliveHandler)
    server.state = ProviderState()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    settings.META_GRAPH_API_BASE_URL = url
    settings.TWILIO_API_BASE_URL = url

    meta = Channel(
        id=1,
        provider="meta",
        phone_number_id="106540352242922",
        access_token=server.state.meta_token,
    )
    twilio = Channel(
        id=2,
        provider="twilio",
        account_sid=server.state.twilio_auth[0],
        auth_token=server.state.twilio_auth[1],
        sender="whatsapp:+14155550123",
    )

    def via(channel: Channel) -> Callable[[int], object]:
        backend = backend_for(channel)
        return lambda i: backend.send(
            channel,
            OutboundMessage(message_id=i, to="16315551181", type="text", content={"body": "Hi"}),
        )

    def new_connection(i: int) -> object:
        return requests.post(
            f"{url}/v26.0/106540352242922/messages",
            json={"messaging_product": "whatsapp", "to": "16315551181", "type": "text"},
            headers={"Authorization": f"Bearer {server.state.meta_token}", "Connection": "close"},
            timeout=10,
        )

    figures = {}
    for name, send_one in (
        ("meta", via(meta)),
        ("twilio", via(twilio)),
        ("new_connection", new_connection),
    ):
        send_one(0)  # warm up: imports, the first connection
        figures[name] = _rate(args.sends, args.threads, send_one)
        print(
            f"{name:>15}: {figures[name]:7.0f} sends/s ({args.sends} sends, {args.threads} threads)"
        )
    server.shutdown()
    print("RESULT " + " ".join(f"{name}_per_s={value:.0f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
