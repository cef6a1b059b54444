"""Nearest reference lots at scale: an HNSW index in PostgreSQL (pgvector), an exact in-process index elsewhere.

Both search the same space the scoring core uses for its evidence: a variety's reference lots in
whitened reduced coordinates (`SpeciesReference.whitened_lots`), Euclidean distance. The database
index is derived data keyed by the model version (one table per species x variety, rebuilt from the
model artefact whenever needed), so it needs no migration and a rollback simply uses the older tables.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, text

from grainproof.errors import ModelError, UnknownVarietyError
from grainproof.reference import ReferenceModel

logger = logging.getLogger("grainproof.store.vector_index")

#: Registry of the per-(model version, species, variety) vector tables.
REGISTRY_TABLE = "reference_vector_index"
#: HNSW build parameters (pgvector defaults are m=16, ef_construction=64).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Neighbour:
    """One nearest reference lot: its id and whitened Euclidean distance to the query."""

    lot_id: str
    distance: float


class NearestLotIndex(Protocol):
    """Finds a variety's reference lots nearest to a lot given in the species' reduced coordinates."""

    def nearest(self, species: str, variety: str, z: np.ndarray, n: int) -> list[Neighbour]: ...


def _variety_index(model: ReferenceModel, species: str, variety: str) -> int:
    ref = model.species.get(species)
    if ref is None or variety not in ref.varieties:
        raise UnknownVarietyError(
            f"{species} / {variety} has no reference lots in model {model.version}; "
            "choose a variety of the model or add reference lots for it."
        )
    return ref.varieties.index(variety)


def query_point(model: ReferenceModel, species: str, z: np.ndarray) -> np.ndarray:
    """A lot's reduced coordinates (k,) as the whitened point the indexes search with."""
    ref = model.species[species]
    if ref.cells is None:
        raise ModelError("The reference model is not fitted; load it with ReferenceModel.load.")
    return np.asarray(z, dtype=np.float64).reshape(-1) @ ref.cells.whitener


class InProcessIndex:
    """Exact nearest lots in memory (SQLite deployments, and PostgreSQL without pgvector)."""

    def __init__(self, model: ReferenceModel) -> None:
        self.model = model

    def nearest(self, species: str, variety: str, z: np.ndarray, n: int) -> list[Neighbour]:
        variety_index = _variety_index(self.model, species, variety)
        ref = self.model.species[species]
        rows, whitened = ref.whitened_lots(variety_index)
        if n <= 0 or not len(rows):
            return []
        distances = np.sqrt(((whitened - query_point(self.model, species, z)) ** 2).sum(1))
        take = min(n, len(rows))
        top = np.argpartition(distances, take - 1)[:take]
        top = top[np.lexsort((ref.lot_ids[rows][top], distances[top]))]
        return [Neighbour(lot_id=str(ref.lot_ids[rows[i]]), distance=float(distances[i])) for i in top]


def pgvector_available(engine: Engine) -> bool:
    """True when the engine is PostgreSQL and the `vector` extension is installed or installable."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        found = connection.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first()
    return found is not None


def _vector_literal(values: np.ndarray) -> str:
    return "[" + ",".join(f"{float(v):.9g}" for v in values) + "]"


def _table_name(version: str, species: str, variety: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{1,32}", version):
        raise ModelError(f"Model version {version!r} is not a content hash; save the model before indexing it.")
    suffix = hashlib.sha256(f"{species}\x00{variety}".encode()).hexdigest()[:10]
    return f"gp_nn_{version}_{suffix}"


class PgVectorIndex:
    """Nearest lots through an HNSW index in PostgreSQL (pgvector); `sync()` loads a model version once."""

    def __init__(self, engine: Engine, model: ReferenceModel, *, ef_search: int = 100) -> None:
        if engine.dialect.name != "postgresql":
            raise ModelError("The pgvector index needs a PostgreSQL database (GRAINPROOF_DATABASE_URL).")
        if not model.version:
            raise ModelError("Save the reference model before indexing it (it has no version yet).")
        self.engine = engine
        self.model = model
        self.ef_search = ef_search

    def sync(self, *, batch: int = 5000) -> int:
        """Create the model version's vector tables and HNSW indexes if missing; returns lots indexed now."""
        added = 0
        with self.engine.begin() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            connection.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (model_version text NOT NULL, species text NOT NULL, "
                    "variety text NOT NULL, table_name text NOT NULL, dim integer NOT NULL, lots integer NOT NULL, "
                    "PRIMARY KEY (model_version, species, variety))"
                )
            )
        for species, ref in sorted(self.model.species.items()):
            for variety_index, variety in enumerate(ref.varieties):
                table = _table_name(self.model.version, species, variety)
                with self.engine.begin() as connection:
                    # One builder at a time per model version (several API workers may start together).
                    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": table})
                    exists = connection.execute(
                        text(
                            f"SELECT 1 FROM {REGISTRY_TABLE} WHERE model_version = :v AND species = :s AND variety = :r"
                        ),
                        {"v": self.model.version, "s": species, "r": variety},
                    ).first()
                    if exists:
                        continue
                    rows, whitened = ref.whitened_lots(variety_index)
                    connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
                    connection.execute(
                        text(f"CREATE TABLE {table} (lot_id text PRIMARY KEY, embedding vector({ref.dim}) NOT NULL)")
                    )
                    raw: Any = connection.connection.dbapi_connection  # psycopg 3: COPY is the fast bulk load
                    with raw.cursor() as cursor, cursor.copy(f"COPY {table} (lot_id, embedding) FROM STDIN") as copy:
                        for start in range(0, len(rows), batch):
                            for row, point in zip(
                                rows[start : start + batch], whitened[start : start + batch], strict=True
                            ):
                                copy.write_row((str(ref.lot_ids[row]), _vector_literal(point)))
                    connection.execute(
                        text(
                            f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_l2_ops) "
                            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
                        )
                    )
                    connection.execute(
                        text(
                            f"INSERT INTO {REGISTRY_TABLE} (model_version, species, variety, table_name, dim, lots) "
                            "VALUES (:v, :s, :r, :t, :d, :n)"
                        ),
                        {"v": self.model.version, "s": species, "r": variety, "t": table, "d": ref.dim, "n": len(rows)},
                    )
                    added += len(rows)
        return added

    def nearest(self, species: str, variety: str, z: np.ndarray, n: int) -> list[Neighbour]:
        _variety_index(self.model, species, variety)
        if n <= 0:
            return []
        table = _table_name(self.model.version, species, variety)
        point = _vector_literal(query_point(self.model, species, z))
        with self.engine.begin() as connection:
            connection.execute(text(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), n)}"))
            # ORDER BY the distance alone, with LIMIT: the only form pgvector answers from the HNSW index.
            found = connection.execute(
                text(
                    f"SELECT lot_id, embedding <-> CAST(:q AS vector) AS distance FROM {table} "
                    "ORDER BY embedding <-> CAST(:q AS vector) LIMIT :n"
                ),
                {"q": point, "n": int(n)},
            ).all()
        ordered = sorted((float(distance), str(lot_id)) for lot_id, distance in found)
        return [Neighbour(lot_id=lot_id, distance=distance) for distance, lot_id in ordered]

    def drop(self, versions: Sequence[str] | None = None) -> None:
        """Remove the vector tables of the given model versions (default: this model's)."""
        versions = list(versions or [self.model.version])
        with self.engine.begin() as connection:
            for version in versions:
                tables = connection.execute(
                    text(f"SELECT table_name FROM {REGISTRY_TABLE} WHERE model_version = :v"), {"v": version}
                ).all()
                for (table,) in tables:
                    connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
                connection.execute(text(f"DELETE FROM {REGISTRY_TABLE} WHERE model_version = :v"), {"v": version})


def nearest_lot_index(engine: Engine | None, model: ReferenceModel) -> NearestLotIndex:
    """The index for a deployment: pgvector HNSW on PostgreSQL with the extension, else exact in-process."""
    if engine is not None and pgvector_available(engine):
        index = PgVectorIndex(engine, model)
        index.sync()
        return index
    if engine is not None and engine.dialect.name == "postgresql":
        logger.warning(
            "PostgreSQL has no pgvector extension: nearest reference lots are searched in process "
            "(install postgresql-<major>-pgvector to search them in the database)."
        )
    return InProcessIndex(model)
