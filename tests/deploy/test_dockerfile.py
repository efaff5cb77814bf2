"""deploy/Dockerfile: parsed and linted by hadolint; the image runs unprivileged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.deploy.environment import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of each line, continuation lines joined."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = hadolint(DOCKERFILE)

    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_dockerfile_that_breaks_its_rules(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("WORKDIR /app", "RUN cd /app"))

    result = hadolint(bad)

    assert result.returncode != 0
    assert "DL3003" in result.stdout  # "use WORKDIR to switch to a directory"


def test_the_image_runs_the_production_web_server_as_an_unprivileged_user() -> None:
    steps = instructions()
    user = [args for name, args in steps if name == "USER"]

    assert user
    assert not user[-1].startswith(("root", "0"))
    assert steps[-1] == (
        "CMD",
        '["gunicorn", "-c", "deploy/gunicorn.conf.py", "whatsapp_platform.wsgi"]',
    )
    assert any(name == "HEALTHCHECK" and "/health/" in args for name, args in steps)
    assert any("collectstatic" in args for name, args in steps if name == "RUN")


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()

    assert {".env", ".git", ".venv", "var"} <= set(ignored)
