"""The metric files of prometheus_client's multiprocess mode."""

from __future__ import annotations

import os
import re
from pathlib import Path

_PID = re.compile(r"_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_process_files(folder: str) -> int:
    """Remove the files of processes that no longer run (a restart's counter reset, which
    Prometheus expects); those of live processes (Celery workers on this host) stay."""
    removed = 0
    for path in Path(folder).glob("*.db"):
        match = _PID.search(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
