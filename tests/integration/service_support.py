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


def reference_photo_path(origin: str, season: int) -> str:
    """The photo a reference manifest names for its lots of one cell (`with_photos`)."""
    return f"photos/{origin}-{season}.jpg"


def reference_photos() -> dict[str, bytes]:
    """One synthetic tray photo per reference cell, keyed by the path the manifest names it by."""
    from synthetic_trays import jpeg_bytes, tray_photo

    return {
        reference_photo_path(origin, season): jpeg_bytes(tray_photo(seed=i * 10 + j, width=640, height=480))
        for i, origin in enumerate(ORIGINS)
        for j, season in enumerate(SEASONS)
    }


def reference_manifest(world: World, *, seed: int = 11, prefix: str = "ref", with_photos: bool = False) -> str:
    """A manifest CSV (text) of reference lots with f_* columns (and a photos column `with_photos`)."""
    rng = np.random.default_rng(seed)
    columns = ["lot_id", "species", "variety", "region", "harvest_date", "device", *feature_columns(DIM)]
    if with_photos:
        columns.insert(6, "photos")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for variety in VARIETIES:
        for origin in ORIGINS:
            for season in SEASONS:
                for _ in range(LOTS_PER_CELL):
                    vector = world.vector(variety, origin, season, rng)
                    photo = [reference_photo_path(origin, season)] if with_photos else []
                    writer.writerow(
                        [
                            f"{prefix}{n:04d}",
                            SPECIES,
                            variety,
                            origin,
                            f"{season}-07-20",
                            "phoneA",
                            *photo,
                            *map(repr, vector),
                        ]
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

    # No blind audits unless a test asks for them: the draw is keyed by each verification's random id, so at the
    # service's 2 % a genuine lot joined the flagged queue in about one run in twenty (the desk tests' "flagged
    # only" failed so). Tests of blind audits set their rate (1.0) and get a fixed key.
    settings.setdefault("blind_audit_rate", 0.0)
    settings.setdefault("blind_audit_secret", "grainproof-tests")
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


def bootstrap_reference(
    client: Any, keys: dict[str, str], world: World, *, photos: dict[str, bytes] | None = None
) -> str:
    """Import the synthetic reference through the API (with `photos`: as a multipart upload naming one photo
    per cell), build a model in the background, activate it."""
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    if photos is None:
        response = client.post(
            "/v1/reference-lots/import",
            content=reference_manifest(world).encode(),
            headers={**admin, "Content-Type": "text/csv"},
        )
    else:
        files = [("manifest", ("reference.csv", reference_manifest(world, with_photos=True).encode(), "text/csv"))]
        files += [("photos", (path, data, "image/jpeg")) for path, data in photos.items()]
        response = client.post("/v1/reference-lots/import", files=files, headers=admin)
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


#: Desk accounts the service tests create: username -> (password, role).
DESK_USERS = {
    "alice": ("alice-correct-horse", "auditor"),
    "bob": ("bob-battery-staple", "auditor"),
}


def create_desk_users(runtime: Any, users: dict[str, tuple[str, str]] = DESK_USERS) -> None:
    """Named desk accounts, as `grainproof users create` makes them."""
    from grainproof.store.database import session_scope
    from grainproof.store.users import create_user

    with session_scope(runtime.engine) as session:
        for username, (password, role) in users.items():
            create_user(session, username=username, password=password, role=role)


def store_photo_verification(runtime: Any, template_id: str, *, lot_id: str, photos: dict[str, bytes]) -> str:
    """A verification of `lot_id` with stored photos, scored like `template_id` (the same vector, hence the same
    verdict) plus the warnings the real photo checks give for these photos, appended to the audit log.

    The service tests' reference has 8-dimensional synthetic vectors, which no photo embeds to; this stores what
    an intake with photos stores, so the desk's photo evidence can be seen.
    """
    import json
    import uuid

    from grainproof.embed.photos import prepare_photo
    from grainproof.store.audit import append_entry, canonical_json, verification_payload
    from grainproof.store.database import session_scope
    from grainproof.store.tables import Verification, utc_now

    warnings = [w for name, data in photos.items() for w in prepare_photo(data, name).warnings]
    with session_scope(runtime.engine) as session:
        template = session.get(Verification, template_id)
        assert template is not None
        claim = {**json.loads(template.claim_json), "lot_id": lot_id}
        verdict = json.loads(template.verdict_json)
        verdict["lot_id"] = lot_id
        verdict["warnings"] = list(dict.fromkeys([*verdict.get("warnings", []), *warnings]))
        row = Verification(
            id=str(uuid.uuid4()),
            lot_id=lot_id,
            species=template.species,
            variety=template.variety,
            site=template.site,
            claim_json=canonical_json(claim),
            photo_hashes_json=canonical_json([runtime.photos.put(data) for data in photos.values()]),
            verdict_json=canonical_json(verdict),
            plausibility=template.plausibility,
            flagged=template.flagged,
            model_version=template.model_version,
            reference_model_id=template.reference_model_id,
            backbone_id=template.backbone_id,
            vector=template.vector,
            unit_vectors=template.unit_vectors,
            requested_by=template.requested_by,
            created_at=utc_now(),
        )
        session.add(row)
        session.flush()
        append_entry(session, kind="verification", record_id=row.id, payload=verification_payload(row))
        return row.id
