"""Reference distributions per species and variety: reduced space, shrunk cell means, calibration scores.

Pure numpy: arrays in, plain results out (no torch, no SQL, no HTTP).
"""

from grainproof.reference.cells import CellModel, CellStatistics, fit_cell_model
from grainproof.reference.model import (
    ModelOptions,
    ReferenceModel,
    SpeciesReference,
    fit_reference_arrays,
    fit_reference_model,
)
from grainproof.reference.runner import ChunkRunner, LocalRunner
from grainproof.reference.space import ReducedSpace, fit_reduced_space
from grainproof.reference.vectors import InMemoryVectors, NpyVectors, ReferenceTable, VectorSource

__all__ = [
    "CellModel",
    "CellStatistics",
    "ChunkRunner",
    "InMemoryVectors",
    "LocalRunner",
    "ModelOptions",
    "NpyVectors",
    "ReducedSpace",
    "ReferenceModel",
    "ReferenceTable",
    "SpeciesReference",
    "VectorSource",
    "fit_cell_model",
    "fit_reduced_space",
    "fit_reference_arrays",
    "fit_reference_model",
]
