"""Where the chunk-parallel steps of a build run: in this process, or on a distributed engine (Ray).

Two steps of a build touch every reference lot: projecting raw vectors into the reduced space and
scoring each lot against the model fitted without its fold (calibration). Both are independent per
chunk of lots, so the builder hands them to a `ChunkRunner`; everything else (reduced space, cell
statistics) is small and stays in the caller. Every runner calls the same chunk functions below, so
the results do not depend on where they ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from grainproof.reference.calibration import nonconformity_for_lots
from grainproof.reference.cells import CellModel
from grainproof.reference.space import ReducedSpace
from grainproof.reference.vectors import VectorSource

ProgressCallback = Callable[[int, int], None]


def project_chunk(space: ReducedSpace, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Reduced coordinates (n, k) of a chunk of raw vectors, their calibration strata (n,), and a digest of
    the raw values (for the inputs hash)."""
    x = np.ascontiguousarray(vectors, dtype=np.float64)
    return space.transform(x), space.calibration_strata(x), hashlib.sha256(x.tobytes()).digest()


def project_rows(space: ReducedSpace, vectors: VectorSource, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """`project_chunk` of the vectors at `rows`, in the order given (read in file order, then put back)."""
    read_order = np.argsort(rows, kind="stable")
    x = np.empty((len(rows), vectors.dim))
    x[read_order] = vectors.take(rows[read_order])
    return project_chunk(space, x)


def score_chunk(
    cells: CellModel, z: np.ndarray, keys: np.ndarray, seasons: Sequence[int | None], outside_tail: float
) -> np.ndarray:
    """Calibration nonconformity (n, 4) of a chunk of lots against their own cells."""
    return nonconformity_for_lots(cells, z, keys, seasons=list(seasons), outside_tail=outside_tail)


class ChunkRunner(Protocol):
    """Runs the per-chunk steps of a build; results come back in chunk order, rows in the order given."""

    def project(
        self, space: ReducedSpace, vectors: VectorSource, chunks: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, bytes]]: ...

    def score(
        self,
        cells: CellModel,
        z: np.ndarray,
        keys: np.ndarray,
        seasons: Sequence[int | None],
        outside_tail: float,
    ) -> np.ndarray: ...


class LocalRunner:
    """Runs every chunk in this process, one after the other (the default)."""

    def project(
        self, space: ReducedSpace, vectors: VectorSource, chunks: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, bytes]]:
        return [project_rows(space, vectors, rows) for rows in chunks]

    def score(
        self,
        cells: CellModel,
        z: np.ndarray,
        keys: np.ndarray,
        seasons: Sequence[int | None],
        outside_tail: float,
    ) -> np.ndarray:
        return score_chunk(cells, z, keys, seasons, outside_tail)
