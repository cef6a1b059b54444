"""Deployment files: the compose file is valid YAML wiring the API to PostgreSQL with pgvector; the image is
slim, runs as a non-root user, checks /health and serves with several workers. (No Docker engine runs here.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_api_on_postgresql_with_pgvector() -> None:
    services = _compose()["services"]
    assert {"api", "db", "migrate"} <= set(services)
    assert "pgvector" in services["db"]["image"]
    api = services["api"]
    assert api["environment"]["GRAINPROOF_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@db:5432/" in api["environment"]["GRAINPROOF_DATABASE_URL"]
    assert api["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert any("/health" in part for part in api["healthcheck"]["test"])
    # Published on loopback only: a reverse proxy with TLS goes in front.
    assert all(str(port).startswith("127.0.0.1:") for port in api["ports"])


def test_compose_keeps_secrets_out_of_the_file_and_ray_optional() -> None:
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    assert "${POSTGRES_PASSWORD:?" in text
    services = _compose()["services"]
    assert services["ray-head"]["profiles"] == ["ray"]
    assert "--head" in services["ray-head"]["command"]
    assert services["migrate"]["command"] == ["grainproof", "db", "upgrade"]


def test_image_is_slim_non_root_with_healthcheck_and_several_workers() -> None:
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    # Every stage starts from BASE_IMAGE, python:3.11-slim unless a local build overrides it (build-local.sh).
    assert "ARG BASE_IMAGE=python:3.11-slim" in lines
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms and all(line.split()[1] == "${BASE_IMAGE}" for line in froms)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    text = "\n".join(lines)
    assert "/health" in text and "download.pytorch.org/whl/cpu" in text
    assert "grainproof serve" in text and "--workers" in text
