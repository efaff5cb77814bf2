"""deploy/systemd/: units that systemd accepts, covering every queue, with one beat."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.deploy.environment import DEPLOY

UNITS = DEPLOY / "systemd"
INSTALL_DIR = "/srv/whatsapp-platform"
# The worker instances the target starts, and the queues each consumes.
WORKER_GROUPS = {
    "incoming": ["incoming"],
    "outgoing": ["outgoing"],
    "ai": ["ai"],
    "background": ["archival", "analytics"],
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def env_file(name: str) -> dict[str, str]:
    lines = (UNITS / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.fixture
def installed_units(tmp_path) -> Path:
    """The units as installed, pointing at this checkout's virtualenv instead of /srv."""
    venv_bin = str(Path(sys.executable).parent)
    for path in UNITS.iterdir():
        if path.suffix in (".service", ".target"):
            text = path.read_text().replace(f"{INSTALL_DIR}/.venv/bin", venv_bin)
            (tmp_path / path.name).write_text(text)
    return tmp_path


def systemd_verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *(str(directory / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


ALL_UNITS = (
    "whatsapp-web.service",
    *(f"whatsapp-worker@{group}.service" for group in WORKER_GROUPS),
    "whatsapp-beat.service",
    "whatsapp-platform.target",
)


def test_systemd_accepts_every_unit(installed_units) -> None:
    if shutil.which("systemd-analyze"):
        result = systemd_verify(installed_units, *ALL_UNITS)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr.strip() == "", result.stderr
    for name in ("whatsapp-web.service", "whatsapp-worker@.service", "whatsapp-beat.service"):
        service = unit(name)["Service"]
        assert service["ExecStart"].startswith(f"{INSTALL_DIR}/.venv/bin/"), name
        assert service["User"] == "whatsapp", name
        assert service["Restart"] == "always", name


def test_systemd_rejects_a_unit_with_a_mistake(installed_units) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is part of systemd"
    web = installed_units / "whatsapp-web.service"
    web.write_text(web.read_text().replace("Restart=always", "Restart=sometimes"))

    result = systemd_verify(installed_units, "whatsapp-web.service")

    assert "Failed to parse service restart specifier" in result.stderr


def test_the_target_starts_a_worker_for_every_queue_and_one_beat() -> None:
    wants = unit("whatsapp-platform.target")["Unit"]["Wants"].split()

    started_groups = [
        w.removeprefix("whatsapp-worker@").removesuffix(".service")
        for w in wants
        if w.startswith("whatsapp-worker@")
    ]
    assert started_groups == list(WORKER_GROUPS)
    assert wants.count("whatsapp-beat.service") == 1
    assert "whatsapp-web.service" in wants
    consumed = [q for group in started_groups for q in WORKER_GROUPS[group]]
    assert sorted(consumed) == sorted(settings.WORK_QUEUES)


def test_worker_instances_consume_their_group_queues() -> None:
    service = unit("whatsapp-worker@.service")["Service"]
    background = env_file("worker-background.env")

    assert "-Q ${WORKER_QUEUES}" in service["ExecStart"]
    # The instance name is the queue unless its environment file names the group's queues.
    assert "WORKER_QUEUES=%i" in service["Environment"]
    assert "-/etc/whatsapp-platform/worker-%i.env" in service.get("EnvironmentFile", "")
    assert background["WORKER_QUEUES"].split(",") == WORKER_GROUPS["background"]
