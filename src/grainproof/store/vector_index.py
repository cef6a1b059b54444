"""Nearest reference lots at scale: an HNSW index in PostgreSQL (pgvector), an exact in-process index elsewhere.

Both search the space the scoring core uses for its evidence: a variety's reference lots in whitened
reduced coordinates (`SpeciesReference.whitened_lots`), Euclidean distance. The database index is derived
data keyed by the model version (one table per species x variety, loaded from the model artefact), so it
needs no migration and a rollback simply uses the older version's tables.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy import Connection, Engine, text

from grainproof.domain import NearestReference
from grainproof.errors import ModelError

if TYPE_CHECKING:  # the scoring core loads scikit-learn: the API imports it on first use, not at start-up
    from grainproof.reference import ReferenceModel
    from grainproof.reference.model import SpeciesReference

logger = logging.getLogger("grainproof.store.vector_index")

#: Registry of the per-(model version, species, variety) vector tables.
REGISTRY_TABLE = "reference_vector_index"
#: HNSW build parameters (pgvector's defaults).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: Memory for one HNSW build: 100 000 lots of 64 dimensions need about 100 MB (PostgreSQL's default is 64 MB).
HNSW_BUILD_MEMORY = "256MB"
#: Candidates HNSW keeps while searching (pgvector's default is 40); more is slower and closer to exact.
#: Measured on 100 000 lots a variety in 64 dimensions: recall@5 0.92 at 100, 0.975 at 200 (docs/operations.md).
HNSW_EF_SEARCH = 200
#: Schema `CREATE EXTENSION vector` uses when the extension is not there yet: a shared one, so that every
#: schema of the database (one per test run, or per tenant) finds the type.
EXTENSION_SCHEMA = "public"


class NearestLotIndex(Protocol):
    """Finds the reference lots of a variety nearest to a lot vector (d,), nearest first."""

    def nearest(self, species: str, variety: str, vector: np.ndarray, n: int) -> tuple[NearestReference, ...]: ...


def _reduced(
    model: ReferenceModel, species: str, variety: str, vector: np.ndarray
) -> tuple[SpeciesReference, int, np.ndarray]:
    """The species reference, the variety's index and the lot's reduced coordinates (k,)."""
    from grainproof.scoring.plausibility import check_vector, species_reference

    ref, variety_index = species_reference(model, species, variety)
    return ref, variety_index, ref.space.transform(check_vector(model, vector)[None, :])[0]


class InProcessIndex:
    """Exact nearest lots in memory (SQLite deployments, and PostgreSQL without pgvector)."""

    def __init__(self, model: ReferenceModel) -> None:
        self.model = model

    def nearest(self, species: str, variety: str, vector: np.ndarray, n: int) -> tuple[NearestReference, ...]:
        from grainproof.scoring.plausibility import nearest_reference_lots

        ref, variety_index, z = _reduced(self.model, species, variety, vector)
        return nearest_reference_lots(ref, variety_index, z, n)


def pgvector_available(engine: Engine) -> bool:
    """True when the engine is PostgreSQL and the `vector` extension is installed or installable."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        found = connection.execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first()
    return found is not None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _vector_literal(values: np.ndarray) -> str:
    # pgvector stores float4: 9 significant digits round-trip every float4 exactly.
    return "[" + ",".join(f"{float(v):.9g}" for v in values) + "]"


def _table_name(version: str, species: str, variety: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{1,32}", version):
        raise ModelError(f"Model version {version!r} is not a content hash; save the model before indexing it.")
    suffix = hashlib.sha256(f"{species}\x00{variety}".encode()).hexdigest()[:10]
    return f"gp_nn_{version}_{suffix}"


def _extension_schema(connection: Connection) -> str | None:
    return connection.execute(
        text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
    ).scalar()


def _registry_exists(connection: Connection) -> bool:
    return connection.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": REGISTRY_TABLE}).scalar() is True


class PgVectorIndex:
    """Nearest lots through an HNSW index in PostgreSQL (pgvector); `sync()` loads a model version once.

    The tables live in the engine's schema (its search path); the extension's type and operators are
    named with the extension's schema, so it may live in another one (normally `public`).
    """

    def __init__(self, engine: Engine, model: ReferenceModel, *, ef_search: int = HNSW_EF_SEARCH) -> None:
        if engine.dialect.name != "postgresql":
            raise ModelError("The pgvector index needs a PostgreSQL database (GRAINPROOF_DATABASE_URL).")
        if not model.version:
            raise ModelError("Save the reference model before indexing it (it has no version yet).")
        self.engine = engine
        self.model = model
        self.ef_search = ef_search
        self._schema: str | None = None

    def ready(self) -> bool:
        """True when every variety of this model version has its table and HNSW index in the database."""
        expected = sum(len(ref.varieties) for ref in self.model.species.values())
        with self.engine.connect() as connection:
            if _extension_schema(connection) is None or not _registry_exists(connection):
                return False
            found = connection.execute(
                text(f"SELECT count(*) FROM {REGISTRY_TABLE} WHERE model_version = :v"), {"v": self.model.version}
            ).scalar()
        return found == expected

    def _extension(self, connection: Connection, *, create: bool = False) -> str:
        """The quoted schema of the `vector` extension; with `create`, the extension is created if missing."""
        if self._schema is None:
            schema = _extension_schema(connection)
            if schema is None and not create:
                raise ModelError("The vector extension is not installed in this database; load the index first (sync).")
            if schema is None:
                # Concurrent CREATE EXTENSION IF NOT EXISTS can still collide: one creator at a time.
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('grainproof:vector'))"))
                connection.execute(text(f"CREATE EXTENSION IF NOT EXISTS vector SCHEMA {_quote(EXTENSION_SCHEMA)}"))
                schema = _extension_schema(connection)
            assert schema is not None
            self._schema = schema if schema.startswith('"') else _quote(schema)
        return self._schema

    def sync(self) -> int:
        """Create the model version's vector tables and HNSW indexes if missing; returns lots indexed now."""
        with self.engine.begin() as connection:
            self._extension(connection, create=True)
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('grainproof:vector-registry'))"))
            connection.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (model_version text NOT NULL, species text NOT NULL, "
                    "variety text NOT NULL, table_name text NOT NULL, dim integer NOT NULL, lots integer NOT NULL, "
                    "PRIMARY KEY (model_version, species, variety))"
                )
            )
        added = 0
        for species, ref in sorted(self.model.species.items()):
            for variety_index, variety in enumerate(ref.varieties):
                with self.engine.begin() as connection:
                    added += self._load_variety(connection, species, variety, variety_index)
        return added

    def _load_variety(self, connection: Connection, species: str, variety: str, variety_index: int) -> int:
        table = _table_name(self.model.version, species, variety)
        vector = self._extension(connection)
        # One loader per table (several API workers may start together); the others then find it done.
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": table})
        exists = connection.execute(
            text(f"SELECT 1 FROM {REGISTRY_TABLE} WHERE model_version = :v AND species = :s AND variety = :r"),
            {"v": self.model.version, "s": species, "r": variety},
        ).first()
        if exists:
            return 0
        ref = self.model.species[species]
        rows, whitened = ref.whitened_lots(variety_index)
        connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        # lot_row: the lot's position in the model's arrays, where its origin and season are.
        connection.execute(
            text(
                f"CREATE TABLE {table} (lot_id text PRIMARY KEY, lot_row integer NOT NULL, "
                f"embedding {vector}.vector({ref.dim}) NOT NULL)"
            )
        )
        raw: Any = connection.connection.dbapi_connection  # psycopg 3: COPY is the fast bulk load
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} (lot_id, lot_row, embedding) FROM STDIN") as copy:
            for row, point in zip(rows, whitened, strict=True):
                copy.write_row((str(ref.lot_ids[row]), int(row), _vector_literal(point)))
        # Built after the load: one bulk HNSW build is much faster than inserting into the index row by row,
        # and much faster again while the graph fits in maintenance_work_mem (pgvector says when it does not).
        connection.execute(text(f"SET LOCAL maintenance_work_mem = '{HNSW_BUILD_MEMORY}'"))
        connection.execute(
            text(
                f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding {vector}.vector_l2_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
            )
        )
        connection.execute(text(f"ANALYZE {table}"))
        connection.execute(
            text(
                f"INSERT INTO {REGISTRY_TABLE} (model_version, species, variety, table_name, dim, lots) "
                "VALUES (:v, :s, :r, :t, :d, :n)"
            ),
            {"v": self.model.version, "s": species, "r": variety, "t": table, "d": ref.dim, "n": len(rows)},
        )
        return len(rows)

    def _query(self, connection: Connection, species: str, variety: str, n: int) -> str:
        table = _table_name(self.model.version, species, variety)
        vector = self._extension(connection)
        # ORDER BY the distance alone, with LIMIT: the only form pgvector answers from the HNSW index.
        return (
            f"SELECT lot_row, embedding OPERATOR({vector}.<->) CAST(:q AS {vector}.vector) AS distance FROM {table} "
            f"ORDER BY embedding OPERATOR({vector}.<->) CAST(:q AS {vector}.vector) LIMIT {int(n)}"
        )

    @contextmanager
    def _search(self, n: int) -> Iterator[Connection]:
        """A connection set up to search `n` lots: autocommit (no BEGIN/COMMIT round trips), ef_search set."""
        ef_search = max(int(self.ef_search), n)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            # A session setting, made once per pooled connection (`info` lives as long as the connection).
            if connection.info.get("grainproof.hnsw_ef_search") != ef_search:
                connection.execute(text(f"SET hnsw.ef_search = {ef_search}"))
                connection.info["grainproof.hnsw_ef_search"] = ef_search
            yield connection

    def nearest(self, species: str, variety: str, vector: np.ndarray, n: int) -> tuple[NearestReference, ...]:
        from grainproof.scoring.plausibility import reference_lots_at

        ref, _, z = _reduced(self.model, species, variety, vector)
        if n <= 0 or ref.cells is None:
            return ()
        with self._search(n) as connection:
            query = self._query(connection, species, variety, n)
            found = connection.execute(text(query), {"q": _vector_literal(z @ ref.cells.whitener)}).all()
        # The same order as the exact index: by distance, ties by lot id.
        ordered = sorted((float(distance), str(ref.lot_ids[row]), int(row)) for row, distance in found)
        return reference_lots_at(
            ref, np.array([row for _, _, row in ordered], dtype=np.int64), np.array([d for d, _, _ in ordered])
        )

    def plan(self, species: str, variety: str, vector: np.ndarray, n: int) -> list[str]:
        """PostgreSQL's plan for `nearest` (EXPLAIN lines): names the HNSW index when the search uses it."""
        ref, _, z = _reduced(self.model, species, variety, vector)
        assert ref.cells is not None
        with self._search(n) as connection:
            query = self._query(connection, species, variety, n)
            lines = connection.execute(text(f"EXPLAIN {query}"), {"q": _vector_literal(z @ ref.cells.whitener)})
            return [str(line) for line in lines.scalars()]

    def drop(self, versions: Sequence[str] | None = None) -> None:
        """Remove the vector tables of the given model versions (default: this model's)."""
        versions = list(versions or [self.model.version])
        with self.engine.begin() as connection:
            if not _registry_exists(connection):
                return
            for version in versions:
                tables = connection.execute(
                    text(f"SELECT table_name FROM {REGISTRY_TABLE} WHERE model_version = :v"), {"v": version}
                ).all()
                for (table,) in tables:
                    connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
                connection.execute(text(f"DELETE FROM {REGISTRY_TABLE} WHERE model_version = :v"), {"v": version})


def nearest_lot_index(engine: Engine | None, model: ReferenceModel) -> NearestLotIndex:
    """The index for a deployment, loaded now: pgvector HNSW on PostgreSQL with the extension, else exact
    in-process (also when loading the database index fails: the search still works, only slower)."""
    if engine is not None and pgvector_available(engine):
        index = PgVectorIndex(engine, model)
        try:
            index.sync()
        except Exception:  # any database error: fall back rather than fail every verification
            logger.exception("could not load reference lots into pgvector; searching them in process")
            return InProcessIndex(model)
        return index
    if engine is not None and engine.dialect.name == "postgresql":
        logger.warning(
            "PostgreSQL has no pgvector extension: nearest reference lots are searched in process "
            "(run .ci/install-pgvector or install postgresql-<major>-pgvector to search them in the database)."
        )
    return InProcessIndex(model)


class NearestLotIndexes:
    """Which index answers each model version in one process: the database's HNSW index once it is loaded
    (PostgreSQL with pgvector), the exact in-process index until then and everywhere else.

    `index_for` never waits for a load: on PostgreSQL it starts one in the background the first time a
    version is not loaded yet, and switches to the database once it is done (both give the same lots,
    within HNSW's approximation).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._indexes: dict[str, NearestLotIndex] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()
        self._loader: ThreadPoolExecutor | None = None

    def index_for(self, model: ReferenceModel) -> NearestLotIndex:
        """The index to search this model version with now."""
        with self._lock:
            found = self._indexes.get(model.version)
            loading = model.version in self._loading
        if found is not None:
            return found
        if self.engine.dialect.name != "postgresql" or not model.version:
            return self._remember(model.version, InProcessIndex(model))
        if not loading:
            database = PgVectorIndex(self.engine, model)
            try:
                ready = database.ready()
            except Exception:  # a database error here must not fail the verification: load (and log) instead
                ready = False
            if ready:  # loaded by the model's build, or by another worker
                return self._remember(model.version, database)
            self._load_in_background(model)
        return InProcessIndex(model)

    def load(self, model: ReferenceModel) -> NearestLotIndex:
        """Load a model version into the database's index now (after a build); the index it will use.

        Never raises: an unreachable database leaves the version to be loaded again on first use.
        """
        try:
            index = nearest_lot_index(self.engine, model)
        except Exception:  # e.g. the database went away: the in-process index still answers
            logger.exception("could not check for pgvector; nearest reference lots are searched in process")
            return InProcessIndex(model)
        finally:
            with self._lock:
                self._loading.discard(model.version)
        return self._remember(model.version, index) if model.version else index

    def close(self) -> None:
        """Wait for a running load to finish."""
        with self._lock:
            loader, self._loader = self._loader, None
        if loader is not None:
            loader.shutdown(wait=True)

    def _load_in_background(self, model: ReferenceModel) -> None:
        with self._lock:
            if model.version in self._loading or model.version in self._indexes:
                return
            self._loading.add(model.version)
            if self._loader is None:
                self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grainproof-vectors")
            self._loader.submit(self.load, model)

    def _remember(self, version: str, index: NearestLotIndex) -> NearestLotIndex:
        with self._lock:
            return self._indexes.setdefault(version, index)
