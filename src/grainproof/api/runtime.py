"""What the running service holds: settings, the database engine, the photo store, loaded models.

One Runtime per app; controllers get it through dependency injection, services take it as
their first argument, and the CLI builds one the same way (`Runtime.open`).
"""

from __future__ import annotations

import gc
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlmodel import Session, select

from grainproof.api.metrics import Metrics
from grainproof.errors import ModelError
from grainproof.settings import Settings
from grainproof.store.database import create_db_engine
from grainproof.store.group_commit import GroupCommitter
from grainproof.store.photos import PhotoStore
from grainproof.store.tables import ReferenceModelVersion
from grainproof.store.vector_index import NearestLotIndexes

if TYPE_CHECKING:
    from grainproof.embed import Embedder
    from grainproof.reference import ReferenceModel


class Runtime:
    """Shared, long-lived state of one service process (thread-safe).

    A plain class, not a dataclass: litestar inspects dataclass fields of injected values.
    """

    def __init__(self, *, settings: Settings, engine: Engine, photos: PhotoStore, embedder: Any | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.photos = photos
        self.metrics = Metrics()
        #: Where nearest reference lots are searched: pgvector's HNSW index once loaded, else in process.
        self.nearest_lots = NearestLotIndexes(engine)
        #: Verifications' writes share transactions (one fsync per batch): see grainproof.store.group_commit.
        self.writes = GroupCommitter(engine)
        self._embedder: Any | None = embedder
        self._models: dict[str, ReferenceModel] = {}
        self._lock = threading.Lock()
        self._builder: ThreadPoolExecutor | None = None

    @classmethod
    def open(cls, settings: Settings, *, engine: Engine | None = None, embedder: Any | None = None) -> Runtime:
        """A runtime on the settings' database (or the given engine) and data dir."""
        return cls(
            settings=settings,
            engine=engine or create_db_engine(settings),
            photos=PhotoStore(settings.photos_dir),
            embedder=embedder,
        )

    def embedder(self) -> Embedder:
        """The photo embedder, loaded on first use (torch and the weights are heavy)."""
        with self._lock:
            if self._embedder is None:
                from grainproof.embed import get_embedder

                self._embedder = get_embedder(settings=self.settings)
            return self._embedder  # type: ignore[no-any-return]

    def load_model(self, path: str) -> ReferenceModel:
        """A reference model artefact, loaded once and kept (artefacts are immutable once built)."""
        with self._lock:
            model = self._models.get(path)
            if model is None:
                from grainproof.reference import ReferenceModel

                if not Path(path).exists():
                    raise ModelError(f"The reference model files at {path} are missing; rebuild the model.")
                model = ReferenceModel.load(Path(path))
                self._models[path] = model
                from grainproof.services.origins import load_regions

                load_regions(model.region_set)  # every claim's origin check needs it: load it now, not mid-request
                # What is alive now (modules, the app, this model) lives as long as the process: keep it out
                # of the collector's full passes, which over its ~150k objects took 50-100 ms, stalling every
                # request in flight. Garbage is collected first, so nothing dead is kept.
                gc.collect()
                gc.freeze()
            return model

    def active_model(self, db: Session | Connection) -> tuple[str, ReferenceModel]:
        """The active model version's id and loaded model; ModelError when none is active.

        Every verification asks, so it reads two columns, on a Core connection where the caller has one.
        """
        table = ReferenceModelVersion.__table__  # type: ignore[attr-defined]
        row = db.execute(select(table.c.id, table.c.path).where(table.c.is_active == True)).first()  # noqa: E712
        if row is None or row.path is None:
            raise ModelError(
                "No reference model is active: build one (POST /v1/reference-models) and activate it "
                "(POST /v1/reference-models/{id}/activate)."
            )
        return str(row.id), self.load_model(row.path)

    def submit_build(self, fn: Any, *args: Any) -> Future[Any]:
        """Run a model build in the single background worker (builds queue; the API stays responsive)."""
        with self._lock:
            if self._builder is None:
                self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grainproof-build")
            return self._builder.submit(fn, *args)

    def close(self) -> None:
        """Wait for running builds, then release the database connections."""
        with self._lock:
            builder, self._builder = self._builder, None
        if builder is not None:
            builder.shutdown(wait=True)
        self.nearest_lots.close()
        self.engine.dispose()
