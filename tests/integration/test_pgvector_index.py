"""Nearest reference lots: the pgvector HNSW index (PostgreSQL) and the in-process index find the same lots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_support import postgres_schema
from sqlalchemy import Engine, text

from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.synthetic import gaussian_world
from grainproof.settings import Settings
from grainproof.store.database import create_db_engine
from grainproof.store.vector_index import InProcessIndex, PgVectorIndex, nearest_lot_index, pgvector_available

WORLD = gaussian_world(dim=12, varieties=2, origins=6, seasons=2, devices=2, origin_scale=0.4, seed=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    fitted = fit_reference_model(WORLD.lots(400, seed=1), seed=0)
    fitted.save(tmp_path_factory.mktemp("nn") / "model")
    return fitted


def _queries() -> list[tuple[str, str, np.ndarray]]:
    return [(lot.claim.species, lot.claim.variety, np.asarray(lot.features)) for lot in WORLD.lots(25, seed=9)]


@pytest.fixture()
def postgres_engine() -> Iterator[Engine]:
    for url, schema in postgres_schema("gp_vectors"):
        engine = create_db_engine(Settings(database_url=url), schema=schema)
        try:
            yield engine
        finally:
            engine.dispose()


def test_in_process_index_gives_the_nearest_lots_the_verdict_shows(model: ReferenceModel) -> None:
    index = InProcessIndex(model)
    for species, variety, vector in _queries():
        z = model.species[species].space.transform(vector[None])[0]
        found = index.nearest(species, variety, z, 5)
        shown = score_claim(
            model, species=species, variety=variety, origin_unit=WORLD.origins[0], season=None, vector=vector
        ).nearest_reference_lots
        assert [n.lot_id for n in found] == [n.lot_id for n in shown]
        assert np.allclose([n.distance for n in found], [n.distance for n in shown])


def test_sqlite_deployments_use_the_in_process_index(model: ReferenceModel, tmp_path: Path) -> None:
    engine = create_db_engine(Settings(data_dir=tmp_path))
    try:
        assert isinstance(nearest_lot_index(engine, model), InProcessIndex)
        assert isinstance(nearest_lot_index(None, model), InProcessIndex)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_finds_the_same_nearest_lots_as_the_in_process_index(
    model: ReferenceModel, postgres_engine: Engine
) -> None:
    """pgvector's HNSW where the extension is installed, else the in-process fallback: same lots either way."""
    index = nearest_lot_index(postgres_engine, model)
    assert isinstance(index, PgVectorIndex) == pgvector_available(postgres_engine)
    exact = InProcessIndex(model)
    overlap = []
    for species, variety, vector in _queries():
        z = model.species[species].space.transform(vector[None])[0]
        found = index.nearest(species, variety, z, 5)
        expected = exact.nearest(species, variety, z, 5)
        overlap.append(len({n.lot_id for n in found} & {n.lot_id for n in expected}) / 5)
        common = {n.lot_id: n.distance for n in expected}
        assert all(abs(n.distance - common[n.lot_id]) < 1e-4 for n in found if n.lot_id in common)
    # HNSW is approximate; on a few hundred lots with ef_search=100 it is all but exact.
    assert np.mean(overlap) >= 0.95


@pytest.mark.postgres
def test_pgvector_index_is_built_once_per_model_version(model: ReferenceModel, postgres_engine: Engine) -> None:
    if not pgvector_available(postgres_engine):
        pytest.skip("the pgvector extension is not installed on this PostgreSQL (postgresql-<major>-pgvector)")
    index = PgVectorIndex(postgres_engine, model)
    first = index.sync()
    assert first == sum(len(ref.lot_ids) for ref in model.species.values())
    assert index.sync() == 0
    with postgres_engine.connect() as connection:
        methods = connection.execute(
            text("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'gp_nn_%' AND indexdef LIKE '%hnsw%'")
        ).scalar()
    assert methods == sum(len(ref.varieties) for ref in model.species.values())
    index.drop()
