"""Shared set-up for the service tests (test_api*, test_store*): a small synthetic reference and API keys.

The reference lots use real département codes, so origin checks go through the real region set,
and Gaussian cell means, so a genuine claim and a far-origin claim are clearly told apart.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.manifest import feature_columns

DIM = 8
SPECIES = "soft_wheat"
VARIETIES = ("apache", "rubisko")
ORIGINS = ("51", "10", "02", "80", "29", "64")  # Marne, Aube, Aisne, Somme, Finistère, Pyrénées-Atlantiques
SEASONS = (2023, 2024)
LOTS_PER_CELL = 10


@dataclass(frozen=True)
class World:
    """Cell means of the synthetic reference; `vector` draws a lot from one cell."""

    variety_means: np.ndarray
    origin_effects: np.ndarray
    season_effects: np.ndarray

    def mean(self, variety: str, origin: str, season: int) -> np.ndarray:
        return (
            self.variety_means[VARIETIES.index(variety)]
            + self.origin_effects[ORIGINS.index(origin)]
            + self.season_effects[SEASONS.index(season)]
        )

    def vector(self, variety: str, origin: str, season: int, rng: np.random.Generator) -> list[float]:
        return [float(x) for x in self.mean(variety, origin, season) + rng.normal(0.0, 0.3, DIM)]


def make_world(seed: int = 7) -> World:
    rng = np.random.default_rng(seed)
    return World(
        variety_means=rng.normal(0.0, 6.0, (len(VARIETIES), DIM)),
        origin_effects=rng.normal(0.0, 3.0, (len(ORIGINS), DIM)),
        season_effects=rng.normal(0.0, 2.0, (len(SEASONS), DIM)),
    )


def reference_manifest(world: World, *, seed: int = 11, prefix: str = "ref") -> str:
    """A manifest CSV (text) of reference lots with f_* columns."""
    rng = np.random.default_rng(seed)
    columns = ["lot_id", "species", "variety", "region", "harvest_date", "device", *feature_columns(DIM)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for variety in VARIETIES:
        for origin in ORIGINS:
            for season in SEASONS:
                for _ in range(LOTS_PER_CELL):
                    vector = world.vector(variety, origin, season, rng)
                    writer.writerow(
                        [f"{prefix}{n:04d}", SPECIES, variety, origin, f"{season}-07-20", "phoneA", *map(repr, vector)]
                    )
                    n += 1
    return buffer.getvalue()


def claim(
    lot_id: str, *, variety: str = "apache", region: str = "51", season: int = 2024, **extra: Any
) -> dict[str, Any]:
    return {
        "lot_id": lot_id,
        "species": SPECIES,
        "variety": variety,
        "origin": {"region": region},
        "harvest_date": f"{season}-07-25",
        **extra,
    }


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Service:
    """A running app under a TestClient, with one key per role and an active reference model."""

    client: Any
    runtime: Any
    keys: dict[str, str]
    world: World
    model_id: str

    def headers(self, role: str | None, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return {**headers, **extra}

    def count(self, table: Any) -> int:
        from sqlalchemy import func
        from sqlmodel import select

        from grainproof.store.database import session_scope

        with session_scope(self.runtime.engine) as session:
            return int(session.exec(select(func.count()).select_from(table)).one())


def wait_for_model(client: Any, headers: dict[str, str], model_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll a background model build until it is ready or failed."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        view = client.get(f"/v1/reference-models/{model_id}", headers=headers).json()
        if view["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return dict(view)
        time.sleep(0.1)


def start_service(
    data_dir: Path,
    *,
    database_url: str | None = None,
    schema: str | None = None,
    embedder: Any = None,
    **settings: Any,
) -> Any:
    """(TestClient context manager, Runtime, admin/auditor/intake keys) on a fresh database in `data_dir`."""
    from litestar.testing import TestClient

    from grainproof.api import create_app
    from grainproof.api.runtime import Runtime
    from grainproof.settings import Settings
    from grainproof.store.database import create_db_engine, session_scope, upgrade
    from grainproof.store.keys import create_key

    config = Settings(data_dir=data_dir, database_url=database_url, **settings)
    runtime = Runtime.open(config, engine=create_db_engine(config, schema=schema), embedder=embedder)
    upgrade(runtime.engine)
    keys: dict[str, str] = {}
    with session_scope(runtime.engine) as session:
        for role, site in (
            ("admin", None),
            ("auditor", None),
            ("intake", "urn:epc:id:sgln:3010000.00001.0"),
            ("intake2", "silo-2"),
        ):
            _, keys[role] = create_key(session, role=role.rstrip("2"), name=f"test {role}", site=site)
    client = TestClient(create_app(config, runtime=runtime))
    return client, runtime, keys


def bootstrap_reference(client: Any, keys: dict[str, str], world: World) -> str:
    """Import the synthetic reference through the API, build a model in the background, activate it."""
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    response = client.post(
        "/v1/reference-lots/import",
        content=reference_manifest(world).encode(),
        headers={**admin, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    build = client.post("/v1/reference-models", json={"seed": 0}, headers=admin)
    assert build.status_code == 202, build.text
    model = wait_for_model(client, admin, build.json()["id"])
    assert model["status"] == "ready", model
    activated = client.post(f"/v1/reference-models/{model['id']}/activate", headers=admin)
    assert activated.status_code == 200, activated.text
    return str(model["id"])


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_schema(prefix: str) -> Iterator[tuple[str, str]]:
    """(URL, schema): a fresh schema on the local PostgreSQL server, dropped afterwards; skips when unreachable."""
    import os
    import uuid

    import pytest
    from sqlalchemy import create_engine, text

    url = os.environ.get("GRAINPROOF_TEST_POSTGRES_URL", POSTGRES_URL)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "no server here"
        engine.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {url} ({type(exc).__name__}); the PostgreSQL tests need it")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
