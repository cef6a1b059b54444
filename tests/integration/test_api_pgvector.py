"""The API on PostgreSQL with pgvector: a model's build loads its reference lots into the HNSW index, and
verifications take their nearest reference lots from the database, the same lots the in-process search finds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from service_support import Service, bootstrap_reference, claim, make_world, postgres_schema, start_service
from sqlalchemy import text

from grainproof.reference import ReferenceModel
from grainproof.store.database import read_scope
from grainproof.store.vector_index import InProcessIndex, PgVectorIndex, pgvector_available

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    for url, schema in postgres_schema("gp_apivec"):
        client, runtime, keys = start_service(tmp_path_factory.mktemp("pgv") / "data", database_url=url, schema=schema)
        if not pgvector_available(runtime.engine):
            runtime.close()
            pytest.skip("the pgvector extension is not installed on this PostgreSQL (run .ci/install-pgvector)")
        world = make_world()
        with client:
            model_id = bootstrap_reference(client, keys, world)
            yield Service(client=client, runtime=runtime, keys=keys, world=world, model_id=model_id)


def _active_model(service: Service) -> ReferenceModel:
    with read_scope(service.runtime.engine) as session:
        _, model = service.runtime.active_model(session)
    return model


def test_model_build_loads_the_hnsw_index_before_activation(pg_service: Service) -> None:
    model = _active_model(pg_service)
    assert PgVectorIndex(pg_service.runtime.engine, model).ready()
    assert isinstance(pg_service.runtime.nearest_lots.index_for(model), PgVectorIndex)
    with pg_service.runtime.engine.connect() as connection:
        lots = connection.execute(
            text("SELECT sum(lots) FROM reference_vector_index WHERE model_version = :v"), {"v": model.version}
        ).scalar()
    assert lots == sum(len(ref.lot_ids) for ref in model.species.values())


def test_verifications_take_nearest_lots_from_the_database(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched: list[str] = []
    database_nearest = PgVectorIndex.nearest

    def spy(self: PgVectorIndex, *args: Any, **kwargs: Any) -> Any:
        searched.append(self.model.version)
        return database_nearest(self, *args, **kwargs)

    monkeypatch.setattr(PgVectorIndex, "nearest", spy)
    model = _active_model(pg_service)
    exact = InProcessIndex(model)
    for seed, (origin, variety) in enumerate([("51", "apache"), ("64", "apache"), ("10", "rubisko")]):
        vector = pg_service.world.vector(variety, origin, 2024, np.random.default_rng(seed))
        response = pg_service.client.post(
            "/v1/verifications",
            json={"claim": claim(f"vec-{seed}", variety=variety, region="51"), "vectors": vector},
            headers=pg_service.headers("intake"),
        )
        assert response.status_code == 201, response.text
        shown = response.json()["verdict"]["nearest_reference_lots"]
        expected = exact.nearest("soft_wheat", variety, np.asarray(vector), 5)
        # 120 lots a variety: PostgreSQL scans them all, so the database's answer is the exact one.
        assert [n["lot_id"] for n in shown] == [n.lot_id for n in expected]
        assert [(n["origin_unit"], n["season"]) for n in shown] == [(n.origin_unit, n.season) for n in expected]
        assert np.allclose([n["distance"] for n in shown], [n.distance for n in expected], rtol=1e-5, atol=1e-5)
    assert searched == [model.version] * 3
