"""Nearest reference lots: the pgvector HNSW index (PostgreSQL) finds the lots the exact in-process index finds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_support import postgres_schema
from sqlalchemy import Engine, text

from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.synthetic import GaussianWorld, gaussian_world
from grainproof.settings import Settings
from grainproof.store import vector_index
from grainproof.store.database import create_db_engine
from grainproof.store.vector_index import (
    InProcessIndex,
    NearestLotIndexes,
    PgVectorIndex,
    nearest_lot_index,
    pgvector_available,
)

WORLD = gaussian_world(dim=12, varieties=2, origins=6, seasons=2, devices=2, origin_scale=0.4, seed=3)
#: Enough lots that PostgreSQL's planner prefers the HNSW index to a sequential scan, in the
#: 64-dimensional reduced space real models use (HNSW's recall drops as the dimension grows).
LARGE_WORLD = gaussian_world(dim=128, varieties=2, origins=6, seasons=2, origin_scale=0.4, seed=5)
LARGE_LOTS = 20_000
RECALL_K = 10


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    fitted = fit_reference_model(WORLD.lots(400, seed=1), seed=0)
    fitted.save(tmp_path_factory.mktemp("nn") / "model")
    return fitted


@pytest.fixture(scope="module")
def large_model(tmp_path_factory: pytest.TempPathFactory) -> ReferenceModel:
    fitted = fit_reference_model(LARGE_WORLD.lots(LARGE_LOTS, seed=1), seed=0)
    fitted.save(tmp_path_factory.mktemp("nn-large") / "model")
    return fitted


def _queries(world: GaussianWorld = WORLD, count: int = 25) -> list[tuple[str, str, np.ndarray]]:
    return [(lot.claim.species, lot.claim.variety, np.asarray(lot.features)) for lot in world.lots(count, seed=9)]


@pytest.fixture()
def postgres_engine() -> Iterator[Engine]:
    for url, schema in postgres_schema("gp_vectors"):
        engine = create_db_engine(Settings(database_url=url), schema=schema)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture()
def pgvector_engine(postgres_engine: Engine) -> Engine:
    if not pgvector_available(postgres_engine):
        pytest.skip("the pgvector extension is not installed on this PostgreSQL (run .ci/install-pgvector)")
    return postgres_engine


def test_in_process_index_gives_the_nearest_lots_the_verdict_shows(model: ReferenceModel) -> None:
    index = InProcessIndex(model)
    for species, variety, vector in _queries():
        shown = score_claim(
            model, species=species, variety=variety, origin_unit=WORLD.origins[0], season=None, vector=vector
        ).nearest_reference_lots
        assert index.nearest(species, variety, vector, 5) == shown
        assert len(shown) == 5


def test_sqlite_deployments_use_the_in_process_index(model: ReferenceModel, tmp_path: Path) -> None:
    engine = create_db_engine(Settings(data_dir=tmp_path))
    try:
        assert not pgvector_available(engine)
        assert isinstance(nearest_lot_index(engine, model), InProcessIndex)
        assert isinstance(nearest_lot_index(None, model), InProcessIndex)
        indexes = NearestLotIndexes(engine)
        assert isinstance(indexes.index_for(model), InProcessIndex)
        assert isinstance(indexes.load(model), InProcessIndex)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_without_pgvector_falls_back_to_the_in_process_index(
    model: ReferenceModel, postgres_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_index, "pgvector_available", lambda engine: False)
    assert isinstance(nearest_lot_index(postgres_engine, model), InProcessIndex)


@pytest.mark.postgres
def test_postgresql_finds_the_same_nearest_lots_as_the_in_process_index(
    model: ReferenceModel, pgvector_engine: Engine
) -> None:
    index = nearest_lot_index(pgvector_engine, model)
    assert isinstance(index, PgVectorIndex)
    exact = InProcessIndex(model)
    for species, variety, vector in _queries():
        found = index.nearest(species, variety, vector, 5)
        expected = exact.nearest(species, variety, vector, 5)
        # A few hundred lots: PostgreSQL scans them all, so the answer is exact (distances in float4).
        assert [n.lot_id for n in found] == [n.lot_id for n in expected]
        assert [(n.origin_unit, n.season) for n in found] == [(n.origin_unit, n.season) for n in expected]
        assert np.allclose([n.distance for n in found], [n.distance for n in expected], rtol=1e-5, atol=1e-5)


@pytest.mark.postgres
def test_hnsw_index_answers_large_varieties_with_high_recall(
    large_model: ReferenceModel, pgvector_engine: Engine
) -> None:
    index = PgVectorIndex(pgvector_engine, large_model)
    index.sync()
    assert large_model.species[LARGE_WORLD.species].dim >= 48  # as high-dimensional as real models
    queries = _queries(LARGE_WORLD, 100)
    species, variety, vector = queries[0]
    plan = "\n".join(index.plan(species, variety, vector, RECALL_K))
    assert "Index Scan using gp_nn_" in plan and "_hnsw on gp_nn_" in plan, plan
    exact = InProcessIndex(large_model)
    recall = []
    for species, variety, vector in queries:
        found = index.nearest(species, variety, vector, RECALL_K)
        expected = {n.lot_id: n.distance for n in exact.nearest(species, variety, vector, RECALL_K)}
        assert len(found) == RECALL_K
        assert [n.distance for n in found] == sorted(n.distance for n in found)
        recall.append(len({n.lot_id for n in found} & set(expected)) / RECALL_K)
        assert all(
            abs(n.distance - expected[n.lot_id]) < 1e-4 * (1 + n.distance) for n in found if n.lot_id in expected
        )
    # HNSW is approximate; m=16, ef_search=200 over 10 000 lots a variety in 64 dimensions misses very few.
    assert np.mean(recall) >= 0.95, np.mean(recall)


@pytest.mark.postgres
def test_pgvector_index_is_built_once_per_model_version(model: ReferenceModel, pgvector_engine: Engine) -> None:
    index = PgVectorIndex(pgvector_engine, model)
    assert not index.ready()
    first = index.sync()
    assert first == sum(len(ref.lot_ids) for ref in model.species.values())
    assert index.ready()
    assert index.sync() == 0
    assert PgVectorIndex(pgvector_engine, model).sync() == 0  # another worker finds it loaded
    with pgvector_engine.connect() as connection:
        schema = connection.execute(text("SELECT current_schema()")).scalar()
        methods = connection.execute(
            text(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = :s AND indexname LIKE 'gp_nn_%' "
                "AND indexdef LIKE '%USING hnsw%'"
            ),
            {"s": schema},
        ).scalar()
    assert methods == sum(len(ref.varieties) for ref in model.species.values())
    index.drop()
    assert not index.ready()


@pytest.mark.postgres
def test_service_searches_in_process_until_the_database_index_is_loaded(
    model: ReferenceModel, pgvector_engine: Engine
) -> None:
    indexes = NearestLotIndexes(pgvector_engine)
    species, variety, vector = _queries()[0]
    first = indexes.index_for(model)  # not loaded yet: answers in process and starts the load in the background
    assert isinstance(first, InProcessIndex)
    expected = first.nearest(species, variety, vector, 5)
    indexes.close()  # waits for the background load
    loaded = indexes.index_for(model)
    assert isinstance(loaded, PgVectorIndex)
    assert [n.lot_id for n in loaded.nearest(species, variety, vector, 5)] == [n.lot_id for n in expected]
    # A second process finds the version loaded and uses the database at once.
    assert isinstance(NearestLotIndexes(pgvector_engine).index_for(model), PgVectorIndex)
