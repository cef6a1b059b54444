"""The Embedder: photo files or bytes in, PhotoEmbeddings out, through the cache and a fast runtime.

A batch of files is a pipeline: a small thread pool reads, decodes, prepares and measures photos while the
network runs on the photos prepared before (decoding and the kernel measurements are numpy, OpenCV and Pillow
work that releases the GIL), so neither waits for the other on a day's intake.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import numpy as np

from grainproof.domain import with_measured_features
from grainproof.embed.backbones import LoadedBackbone, load_backbone
from grainproof.embed.cache import EmbeddingCache
from grainproof.embed.morphometrics import measure_kernels, photo_measurements
from grainproof.embed.photos import PREPROCESS_VERSION, PreparedPhoto, content_hash, prepare_photo
from grainproof.embed.runtime import FeatureMapRunner, cpu_threads, make_runner
from grainproof.embed.vectors import PhotoEmbedding
from grainproof.errors import PhotoError
from grainproof.measurement_layout import MEASUREMENT_NAMES
from grainproof.progress import ProgressCallback
from grainproof.settings import Settings, get_settings

#: Unit vectors kept per photo (each a 2x2-cell patch, about one kernel at the working scale).
UNITS_PER_PHOTO = 32
#: A patch counts as a unit when at least this share of it is kernel, not tray.
MIN_UNIT_KERNEL_SHARE = 0.25
#: Canvases of one shape run together in batches of this size.
BATCH_SIZE = 8
#: Photos being read, prepared and measured ahead of the network, per worker thread (bounds memory).
PREFETCH_PER_WORKER = 2 * BATCH_SIZE

#: A photo's kernel measurements and its warnings, as `measure_photo` returns them.
Measured = tuple[np.ndarray, tuple[str, ...]]


#: Kernel measurements that lead every photo vector: with the card, without it, and sizes (measurement_layout).
MEASURED_FEATURES: tuple[str, ...] = MEASUREMENT_NAMES
#: Bump when the kernel measurements change: it is part of the cache key, like PREPROCESS_VERSION.
MEASUREMENT_VERSION = "kernels-v13"
_LENGTH_INDEX = MEASUREMENT_NAMES.index("log_length_mm")
#: Typical kernels of the cereals grainproof serves are 4-12 mm long; a photo measuring outside this range
#: measured something else (tray fragments on a grain-coloured board, a close-up without the card).
PLAUSIBLE_KERNEL_LENGTH_MM = (2.5, 20.0)


def measure_photo(photo: PreparedPhoto) -> tuple[np.ndarray, tuple[str, ...]]:
    """(kernel measurements in MEASURED_FEATURES order, the photo's warnings with any about measuring).

    What could not be measured is zero (grainproof.measurement_layout): everything when too few single
    kernels are seen, the card's columns when the card is not; `lot_embedding` leaves zeros out of the lot.
    """
    view = photo.kernels
    table = measure_kernels(view.reflectance, view.kernel_mask, view.px_per_mm)
    values = photo_measurements(
        table,
        tray=view.tray if view.colour_reference else None,
        calibrated=view.calibrated,
        size_factor=view.size_factor,
        hue_redness=not view.calibrated and view.tray_lit,
    )
    if values is None:
        note = "too few separate kernels to measure; spread the sample so kernels do not touch."
        return np.zeros(len(MEASURED_FEATURES), dtype=np.float32), (*photo.warnings, note)
    length = float(np.exp(values[_LENGTH_INDEX]))
    if view.calibrated and not PLAUSIBLE_KERNEL_LENGTH_MM[0] <= length <= PLAUSIBLE_KERNEL_LENGTH_MM[1]:
        # Fragments of a badly segmented tray: not a lot's kernels.
        note = f"measured kernels are {length:.1f} mm long, which no cereal grain is; the kernels were not measured."
        return np.zeros(len(MEASURED_FEATURES), dtype=np.float32), (*photo.warnings, note)
    return values.astype(np.float32), photo.warnings


def pool_feature_map(features: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(photo vector, unit vectors) from one feature map (c, h, w) and its cells' kernel shares (h, w)."""
    channels, height, width = features.shape
    cells = features.reshape(channels, height * width).T.astype(np.float64)
    flat = weights.reshape(-1).astype(np.float64)
    vector = (flat @ cells) / flat.sum()
    if height >= 2 and width >= 2:
        h2, w2 = height // 2, width // 2
        blocks = features[:, : 2 * h2, : 2 * w2].reshape(channels, h2, 2, w2, 2)
        block_w = weights[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).astype(np.float64)
        numer = np.einsum("chawb,hawb->hwc", blocks.astype(np.float64), block_w)
        share = block_w.sum(axis=(1, 3))
        units = (numer / np.maximum(share, 1e-12)[..., None]).reshape(h2 * w2, channels)
        share = share.reshape(-1) / 4.0
    else:
        units, share = cells, flat
    order = np.argsort(-share, kind="stable")
    keep = [i for i in order[:UNITS_PER_PHOTO] if share[i] >= MIN_UNIT_KERNEL_SHARE] or [int(order[0])]
    # Round units through half precision, as the cache stores them: a cached and a fresh result are identical.
    unit_vectors = units[np.sort(keep)].astype(np.float16).astype(np.float32)
    return vector.astype(np.float32), unit_vectors


class Embedder:
    """Turns photos into PhotoEmbeddings with one backbone; cache-aware; build with `get_embedder`."""

    def __init__(
        self, backbone: LoadedBackbone, runner: FeatureMapRunner, *, settings: Settings, use_card: bool = True
    ) -> None:
        self.backbone = backbone
        self.runner = runner
        self.settings = settings
        #: False ignores the calibration card even where it is seen (to measure what the card brings).
        self.use_card = use_card
        self.cache = EmbeddingCache(
            settings.embedding_cache_dir / "embeddings",
            backbone_id=with_measured_features(backbone.backbone_id, len(MEASURED_FEATURES)),
            preprocess_version=f"{PREPROCESS_VERSION}+{MEASUREMENT_VERSION}+{runner.numerics}"
            + ("" if use_card else "-card-ignored")
            + (f"+at{settings.capture_distance_mm:g}mm" if settings.capture_distance_mm else ""),
        )
        self._mean = np.asarray(backbone.mean, dtype=np.float32)
        self._std = np.asarray(backbone.std, dtype=np.float32)
        self._lock = threading.Lock()  # ONNX sessions are thread-safe, torch thread settings are not

    @property
    def backbone_id(self) -> str:
        """The network's id and weights hash, tagged with the kernel measurements leading every vector."""
        return with_measured_features(self.backbone.backbone_id, len(MEASURED_FEATURES))

    @property
    def dim(self) -> int:
        return len(MEASURED_FEATURES) + self.backbone.dim

    def prepare(self, data: bytes, name: str) -> PreparedPhoto:
        return prepare_photo(
            data,
            name,
            min_side=self.settings.min_photo_side,
            max_pixels=self.settings.max_photo_pixels,
            use_card=self.use_card,
            capture_distance_mm=self.settings.capture_distance_mm,
        )

    def without_card(self) -> Embedder:
        """The same network, ignoring the calibration card: the baseline the card is measured against."""
        return Embedder(self.backbone, self.runner, settings=self.settings, use_card=False)

    def _network_input(self, prepared: PreparedPhoto) -> np.ndarray:
        return np.ascontiguousarray(((prepared.pixels - self._mean) / self._std).transpose(2, 0, 1))

    def embed_prepared(self, photos: Sequence[PreparedPhoto]) -> list[PhotoEmbedding]:
        """Embed prepared photos, batching those of one canvas shape; no cache involved."""
        results: list[PhotoEmbedding | None] = [None] * len(photos)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, photo in enumerate(photos):
            by_shape.setdefault(photo.pixels.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), BATCH_SIZE):
                chunk = indices[start : start + BATCH_SIZE]
                embedded = self._embed_batch([photos[i] for i in chunk])
                for i, embedding in zip(chunk, embedded, strict=True):
                    results[i] = embedding
        return [r for r in results if r is not None]

    def _embed_batch(
        self, photos: Sequence[PreparedPhoto], measurements: Sequence[Measured] | None = None
    ) -> list[PhotoEmbedding]:
        """One network call for photos of one canvas shape, then each photo's vector, units and measurements
        (`measurements`: the photos' `measure_photo` results, when a worker took them already)."""
        batch = np.stack([self._network_input(photo) for photo in photos])
        with self._lock:
            features = self.runner(batch)
        embeddings = []
        for index, (photo, feature_map) in enumerate(zip(photos, features, strict=True)):
            vector, units = pool_feature_map(feature_map, photo.cell_weights)
            measured, warnings = measurements[index] if measurements is not None else measure_photo(photo)
            embeddings.append(
                PhotoEmbedding(
                    vector=np.concatenate([measured, vector]),
                    # A unit is a patch of about one kernel; it carries its photo's measurements (rounded
                    # through half precision like the rest, as the cache stores them).
                    unit_vectors=np.hstack([np.repeat(measured[None, :], len(units), axis=0), units])
                    .astype(np.float16)
                    .astype(np.float32),
                    content_hash=photo.content_hash,
                    warnings=warnings,
                    backbone_id=self.backbone_id,
                )
            )
        return embeddings

    def embed_bytes(self, data: bytes, name: str) -> PhotoEmbedding:
        """One uploaded photo's embedding (cached); PhotoError naming `name` if the photo is unusable."""
        cached = self.cache.get(content_hash(data))
        if cached is not None:
            return cached
        embedding = self.embed_prepared([self.prepare(data, name)])[0]
        self.cache.put(embedding)
        return embedding

    def embed_files(
        self,
        paths: Sequence[Path],
        progress: ProgressCallback | None = None,
        *,
        use_cache: bool = True,
        workers: int | None = None,
    ) -> list[PhotoEmbedding]:
        """Embeddings of photo files, in order; each distinct photo content is embedded at most once.

        `workers` threads (default: the embedding threads setting) read, prepare and measure photos while the
        network runs; at most a few batches are held in memory at once, whatever the number of files.
        """
        total = len(paths)
        pool_size = workers or cpu_threads(self.settings.torch_threads)
        results: dict[str, PhotoEmbedding] = {}
        hashes: list[str] = []
        pending: dict[str, Path] = {}  # content hash -> one file with that content, still to embed
        with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="grainproof-photos") as pool:
            for path, digest in zip(paths, pool.map(_file_hash, paths), strict=True):
                hashes.append(digest)
                if digest in results or digest in pending:
                    continue
                cached = self.cache.get(digest) if use_cache else None
                if cached is not None:
                    results[digest] = cached
                else:
                    pending[digest] = Path(path)
            done = total - len(pending)
            if progress is not None:
                progress(done, total)
            # Batches fill by canvas shape as prepared photos arrive; a photo's file is read again here so that
            # memory stays flat on big manifests. Its result is keyed by the first read: a file rewritten
            # meanwhile still gets an answer (for its new content).
            waiting: dict[tuple[int, ...], list[tuple[str, PreparedPhoto, Measured]]] = {}
            # Cache files are written by the pool, so the network never waits on the disk.
            writes: list[Future[None]] = []

            def run(group: list[tuple[str, PreparedPhoto, Measured]]) -> None:
                nonlocal done
                embeddings = self._embed_batch([photo for _, photo, _ in group], [m for _, _, m in group])
                for (digest, _, _), embedding in zip(group, embeddings, strict=True):
                    results[digest] = embedding
                    if use_cache:
                        writes.append(pool.submit(self.cache.put, embedding))
                done += len(group)
                if progress is not None:
                    progress(done, total)

            ready = _ordered_map(pool, self._prepare_and_measure, pending.items(), PREFETCH_PER_WORKER * pool_size)
            with closing(ready):  # on an error, photos still queued are dropped rather than prepared
                for digest, photo, measurement in ready:
                    group = waiting.setdefault(photo.pixels.shape, [])
                    group.append((digest, photo, measurement))
                    if len(group) == BATCH_SIZE:
                        run(waiting.pop(photo.pixels.shape))
            for group in waiting.values():
                run(group)
            for write in writes:
                write.result()  # a cache that cannot be written is an error here, as it was inline
        return [results[h] for h in hashes]

    def _prepare_and_measure(self, item: tuple[str, Path]) -> tuple[str, PreparedPhoto, Measured]:
        """A worker's share of a photo: read, prepare for the network, measure the kernels."""
        digest, path = item
        photo = self.prepare(_read(path), str(path))
        return digest, photo, measure_photo(photo)


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def _ordered_map(
    pool: ThreadPoolExecutor, work: Callable[[_Item], _Result], items: Iterable[_Item], ahead: int
) -> Generator[_Result, None, None]:
    """`pool.map` that keeps at most `ahead` items in flight, so a long manifest is not held in memory at once.

    Results come in the items' order; the first failure is raised when its turn comes, and what was queued
    after it is cancelled.
    """
    queue: deque[Future[_Result]] = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            queue.append(pool.submit(work, item))
            if len(queue) >= ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        for future in queue:
            future.cancel()


def _file_hash(path: Path) -> str:
    return content_hash(_read(path))


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PhotoError(f"Photo {path} cannot be read ({exc.strerror}); check the path.") from None


_EMBEDDERS: dict[tuple[object, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(
    name: str | None = None,
    *,
    checkpoint_path: Path | None = None,
    settings: Settings | None = None,
    runtime: str | None = None,
) -> Embedder:
    """The embedder for a backbone name (default: settings.backbone), loaded once per process and reused."""
    settings = settings or get_settings()
    name = name or settings.backbone
    runtime = runtime or settings.embed_runtime
    threads = cpu_threads(settings.torch_threads)
    key = (name, checkpoint_path, settings.embedding_cache_dir, runtime, threads)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            cache = settings.embedding_cache_dir
            backbone = load_backbone(name, checkpoint_path=checkpoint_path, checked_dir=cache / "checked-weights")
            # Weights whose classifier check is on record, with their network exported and compiled before,
            # start without torch; otherwise the network loads here, checked, and the check is remembered.
            backbone.ensure_checked()
            onnx_path = cache / "onnx" / f"{backbone.backbone_id}.onnx"
            runner = make_runner(
                backbone, kind=runtime, onnx_path=onnx_path, threads=threads, compiled_dir=cache / "openvino"
            )
            embedder = Embedder(backbone, runner, settings=settings)
            _EMBEDDERS[key] = embedder
        return embedder
