"""The distributed path: embedding and reference building through Ray Data, behind the same interfaces.

`RayEmbedder` has the Embedder's `embed_files` / `backbone_id` / `dim`, so `embed_manifest` runs
unchanged on it; `RayRunner` is a `ChunkRunner`, so `fit_reference_model` runs unchanged on it. Each
uses `map_batches` with a callable class: the backbone (or the reduced space / cell model) is loaded
once per actor, not once per batch. Workers call the very functions the single-process path calls
(`Embedder.embed_files`, `project_rows`, `score_chunk`), which is why the results are the same.

Local Ray (`ray.init(num_cpus=...)`) is the default; give `address` for a cluster. On a cluster the
photo paths and `.npy` vector files must be readable at the same paths on every node (shared storage).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.embed.vectors import PhotoEmbedding
from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback
from grainproof.reference.calibration import CELL_COLUMNS
from grainproof.reference.cells import CellModel
from grainproof.reference.runner import project_rows, score_chunk
from grainproof.reference.space import ReducedSpace
from grainproof.reference.vectors import VectorSource
from grainproof.settings import Settings, get_settings

logger = logging.getLogger("grainproof.scale.ray")

#: Lots per calibration task (one map_batches row).
SCORE_CHUNK = 4096


def init_ray(address: str | None = None, *, num_cpus: int | None = 2) -> None:
    """Connect to the Ray cluster at `address`, or start a local Ray with `num_cpus` CPUs (once per process)."""
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # Ray raises many kinds (ConnectionError, RuntimeError, ...)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise GrainproofError(
            f"Could not start or reach {where} ({exc}); check --ray-address, or drop it to run locally."
        ) from None
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _pack(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _unpack(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def _column(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object column (bytes or str per row), the form Ray Data passes through untouched."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


# ----- embedding ---------------------------------------------------------------------------------


class _EmbedPhotos:
    """Ray Data actor: loads the backbone once, then embeds batches of photo paths (cache-aware)."""

    def __init__(self, name: str | None, checkpoint_path: str | None, settings: Settings) -> None:
        from grainproof.embed import get_embedder

        self.embedder = get_embedder(
            name, checkpoint_path=Path(checkpoint_path) if checkpoint_path else None, settings=settings
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        photos = self.embedder.embed_files([Path(str(p)) for p in batch["path"]])
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "vector": _column([_pack(p.vector) for p in photos]),
            "units": _column([_pack(p.unit_vectors) for p in photos]),
            "content_hash": _column([p.content_hash for p in photos]),
            "warnings": _column(["\n".join(p.warnings) for p in photos]),
            "backbone_id": _column([p.backbone_id or self.embedder.backbone_id for p in photos]),
        }


@dataclass(slots=True, kw_only=True)
class RayEmbedder:
    """Embeds photo files on Ray actors; usable wherever an Embedder's `embed_files` is (e.g. embed_manifest)."""

    name: str | None = None
    checkpoint_path: Path | None = None
    settings: Settings | None = None
    address: str | None = None
    num_cpus: int | None = 2
    actors: int = 2
    batch_size: int = 8
    _backbone_id: str = ""
    _dim: int = 0

    @property
    def backbone_id(self) -> str:
        if not self._backbone_id:
            self._describe()
        return self._backbone_id

    @property
    def dim(self) -> int:
        if not self._dim:
            self._describe()
        return self._dim

    def _describe(self) -> None:
        from grainproof.embed.backbones import load_backbone

        backbone = load_backbone(
            self.name or (self.settings or get_settings()).backbone, checkpoint_path=self.checkpoint_path
        )
        self._backbone_id, self._dim = backbone.backbone_id, backbone.dim

    def embed_files(self, paths: Sequence[Path], progress: ProgressCallback | None = None) -> list[PhotoEmbedding]:
        """Embeddings of photo files, in order, computed by `actors` Ray actors of one CPU each."""
        import ray.data

        if not paths:
            return []
        init_ray(self.address, num_cpus=self.num_cpus)
        # One thread per actor: Ray gives each actor one CPU, so more would only fight over it.
        settings = replace(self.settings or get_settings(), torch_threads=1)
        items = [{"index": i, "path": str(Path(p).resolve())} for i, p in enumerate(paths)]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * self.actors)))
        embedded = dataset.map_batches(
            _EmbedPhotos,
            fn_constructor_args=(self.name, str(self.checkpoint_path) if self.checkpoint_path else None, settings),
            batch_size=self.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=1,
        )
        results: list[PhotoEmbedding | None] = [None] * len(paths)
        done = 0
        for batch in embedded.iter_batches(batch_size=self.batch_size, batch_format="numpy"):
            for i, vector, units, digest, warnings, backbone in zip(
                batch["index"],
                batch["vector"],
                batch["units"],
                batch["content_hash"],
                batch["warnings"],
                batch["backbone_id"],
                strict=True,
            ):
                results[int(i)] = PhotoEmbedding(
                    vector=_unpack(vector),
                    unit_vectors=_unpack(units),
                    content_hash=str(digest),
                    warnings=tuple(w for w in str(warnings).split("\n") if w),
                    backbone_id=str(backbone),
                )
                self._backbone_id = str(backbone)
                self._dim = int(results[int(i)].vector.shape[0])  # type: ignore[union-attr]
                done += 1
            if progress is not None:
                progress(done, len(paths))
        missing = [str(paths[i]) for i, r in enumerate(results) if r is None]
        if missing:
            raise GrainproofError(f"Ray returned no embedding for {len(missing)} photo(s), e.g. {missing[0]}.")
        return [r for r in results if r is not None]


# ----- reference building -----------------------------------------------------------------------


class _ProjectChunks:
    """Ray Data actor: holds the reduced space and the vector source; projects chunks of lots."""

    def __init__(self, space: ReducedSpace, vectors: VectorSource) -> None:
        self.space = space
        self.vectors = vectors

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z_out, strata_out, digests = [], [], []
        for rows in batch["rows"]:
            z, strata, digest = project_rows(self.space, self.vectors, _unpack(rows))
            z_out.append(_pack(z))
            strata_out.append(_pack(strata))
            digests.append(digest)
        return {
            "chunk": np.asarray(batch["chunk"], dtype=np.int64),
            "z": _column(z_out),
            "strata": _column(strata_out),
            "digest": _column(digests),
        }


class _ScoreChunks:
    """Ray Data actor: holds one fold's cell model; scores chunks of calibration lots."""

    def __init__(self, cells: CellModel, seasons: list[int | None], outside_tail: float) -> None:
        self.cells = cells
        self.seasons = seasons
        self.outside_tail = outside_tail

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = [
            _pack(score_chunk(self.cells, _unpack(z), _unpack(keys), self.seasons, self.outside_tail))
            for z, keys in zip(batch["z"], batch["keys"], strict=True)
        ]
        return {"chunk": np.asarray(batch["chunk"], dtype=np.int64), "scores": _column(scores)}


@dataclass(slots=True, kw_only=True)
class RayRunner:
    """A ChunkRunner that runs a build's per-chunk steps on Ray actors (see grainproof.reference.runner)."""

    address: str | None = None
    num_cpus: int | None = 2
    actors: int = 2

    def _run(self, actor: type, args: tuple[Any, ...], items: list[dict[str, Any]]) -> list[dict[str, bytes]]:
        """Map `actor` over items (one per chunk) on Ray; the outputs, in chunk order."""
        import ray.data

        init_ray(self.address, num_cpus=self.num_cpus)
        dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * self.actors)))
        mapped = dataset.map_batches(
            actor,
            fn_constructor_args=args,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, min(self.actors, len(items)))),
            num_cpus=1,
        )
        out: dict[int, dict[str, bytes]] = {}
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            for row in range(len(batch["chunk"])):
                out[int(batch["chunk"][row])] = {str(k): bytes(v[row]) for k, v in batch.items() if k != "chunk"}
        if len(out) != len(items):
            raise GrainproofError(f"Ray returned {len(out)} of {len(items)} chunks; rerun the build.")
        return [out[i] for i in range(len(items))]

    def project(
        self, space: ReducedSpace, vectors: VectorSource, chunks: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, bytes]]:
        items = [{"chunk": i, "rows": _pack(np.asarray(rows, dtype=np.int64))} for i, rows in enumerate(chunks)]
        return [
            (_unpack(row["z"]), _unpack(row["strata"]), row["digest"])
            for row in self._run(_ProjectChunks, (space, vectors), items)
        ]

    def score(
        self,
        cells: CellModel,
        z: np.ndarray,
        keys: np.ndarray,
        seasons: Sequence[int | None],
        outside_tail: float,
    ) -> np.ndarray:
        if not len(z):
            return np.zeros((0, CELL_COLUMNS))
        items = [
            {"chunk": i, "z": _pack(z[start : start + SCORE_CHUNK]), "keys": _pack(keys[start : start + SCORE_CHUNK])}
            for i, start in enumerate(range(0, len(z), SCORE_CHUNK))
        ]
        rows = self._run(_ScoreChunks, (cells, list(seasons), outside_tail), items)
        return np.vstack([_unpack(row["scores"]) for row in rows])
