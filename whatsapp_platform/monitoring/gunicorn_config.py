"""Gunicorn hooks for multiprocess metrics: `gunicorn -c python:whatsapp_platform.monitoring.
gunicorn_config ...`, or import these hooks into another config module."""

from __future__ import annotations

import os
from typing import Any

from whatsapp_platform.monitoring.multiproc import remove_dead_process_files


def on_starting(server: Any) -> None:
    # Loads the settings, which set PROMETHEUS_MULTIPROC_DIR for the master and so for every
    # worker it forks; then drops the files of processes that are gone.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whatsapp_platform.settings")
    from django.conf import settings

    remove_dead_process_files(settings.PROMETHEUS_MULTIPROC_DIR)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
