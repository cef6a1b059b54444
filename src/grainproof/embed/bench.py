"""Benchmarks of the embedding engine: speed against the naive path, and invariance to unseen phones.

Each benchmark measures its baseline in the same run as ours and reports the ratio (the CLI prints them and
writes JSON with --json-out).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.embed.invariance import DeviceNuisanceRemover
from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback
from grainproof.reference.space import block_scale, feature_blocks
from grainproof.settings import Settings, get_settings

# ---------------------------------------------------------------------------------------------------- speed


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbedSpeed:
    """Images per second for the naive path and ours on the same canvases, and how close their vectors are."""

    backbone_id: str
    runtime: str
    canvas: tuple[int, int]
    images: int
    rounds: int
    threads: int
    naive_images_per_s: float
    ours_images_per_s: float
    speedup: float
    min_cosine_to_naive: float
    gflops_per_image: float
    matmul_gflops_per_s: float
    fraction_of_matmul_peak: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synthetic_canvases(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """Normalised network inputs (n, 3, h, w): smooth random images, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1.0, 1.0, size=(n, 3, height // 16, width // 16)).astype(np.float32)
    return np.ascontiguousarray(coarse.repeat(16, axis=2).repeat(16, axis=3))


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput (GFLOP/s) with torch, best of a few runs."""
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def backbone_gflops(model: Any, height: int, width: int) -> float:
    """FLOPs (GFLOP, multiply and add counted apart) of one forward pass of the feature extractor."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.forward_features(torch.zeros(1, 3, height, width))
    return float(counter.get_total_flops()) / 1e9


def bench_embed(
    *,
    settings: Settings | None = None,
    images: int = 16,
    rounds: int = 3,
    canvas: tuple[int, int] = (320, 608),
    seed: int = 0,
    matmul_size: int = 2048,
    progress: ProgressCallback | None = None,
) -> EmbedSpeed:
    """Naive path (timm model, eval + no_grad, one image at a time) against our runner, interleaved per round."""
    import timm
    import torch

    from grainproof.embed.embedder import get_embedder
    from grainproof.embed.runtime import cpu_threads

    settings = settings or get_settings()
    if images < 1 or rounds < 1:
        raise GrainproofError("--images and --rounds must be at least 1.")
    embedder = get_embedder(settings=settings)
    threads = cpu_threads(settings.torch_threads)
    height, width = canvas
    batch = _synthetic_canvases(images, height, width, seed)
    # The naive path: the same weights in a freshly created timm model, used the way its README shows.
    naive = timm.create_model(embedder.backbone.timm_name, pretrained=False, num_classes=0)
    naive.load_state_dict(embedder.backbone.model.state_dict())
    naive.eval()

    def run_naive() -> np.ndarray:
        with torch.no_grad():
            return np.stack([naive(torch.from_numpy(batch[i : i + 1]))[0].numpy() for i in range(images)])

    def run_ours() -> np.ndarray:
        from grainproof.embed.embedder import BATCH_SIZE

        maps = [embedder.runner(batch[i : i + BATCH_SIZE]) for i in range(0, images, BATCH_SIZE)]
        return np.concatenate(maps).mean(axis=(2, 3))

    naive_vectors, ours_vectors = run_naive(), run_ours()  # warm-up, and the vectors to compare
    naive_times: list[float] = []
    ours_times: list[float] = []
    for round_index in range(rounds):
        for runner, times in ((run_naive, naive_times), (run_ours, ours_times)):
            start = time.perf_counter()
            runner()
            times.append(time.perf_counter() - start)
        if progress is not None:
            progress(round_index + 1, rounds)
    cosine = np.sum(naive_vectors * ours_vectors, axis=1) / (
        np.linalg.norm(naive_vectors, axis=1) * np.linalg.norm(ours_vectors, axis=1)
    )
    naive_rate = images / statistics.median(naive_times)
    ours_rate = images / statistics.median(ours_times)
    gflops = backbone_gflops(naive, height, width)
    peak = matmul_gflops(threads, size=matmul_size)
    return EmbedSpeed(
        backbone_id=embedder.backbone_id,
        runtime=embedder.runner.name,
        canvas=canvas,
        images=images,
        rounds=rounds,
        threads=threads,
        naive_images_per_s=naive_rate,
        ours_images_per_s=ours_rate,
        speedup=ours_rate / naive_rate,
        min_cosine_to_naive=float(cosine.min()),
        gflops_per_image=gflops,
        matmul_gflops_per_s=peak,
        fraction_of_matmul_peak=ours_rate * gflops / peak,
    )


# ------------------------------------------------------------------------------------------- whole process

#: The photo files the whole-process comparison accepts in a folder.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpeed:
    """Seconds for a whole process (start-up included) to embed the same photos: a plain timm loop against
    `grainproof embed` on a fresh cache (it exports and compiles the network) and on a warm one (network ready,
    photos new). Medians over `rounds`; ratios are the loop's time over ours."""

    source: str
    photos: int
    rounds: int
    threads: int
    runtime: str
    naive_s: float
    ours_cold_s: float
    ours_warm_s: float
    speedup_cold: float
    speedup_warm: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_photo_manifest(source: Path, scratch: Path) -> tuple[Path, list[Path]]:
    """A lot manifest and its photo files: `source` itself, or one lot per photo of a folder (docs/manifest.md)."""
    from grainproof.domain import Claim, LotRecord, Origin
    from grainproof.manifest import read_manifest, write_manifest

    if source.is_dir():
        files = sorted(p.resolve() for p in source.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if not files:
            raise GrainproofError(f"{source} holds no .jpg or .png photos; give a folder of photos or a manifest.")
        lots = [
            LotRecord(
                claim=Claim(
                    lot_id=f"{i:05d}-{p.stem}", species="unknown", variety="unknown", origin=Origin(region="-")
                ),
                photos=(str(p),),
            )
            for i, p in enumerate(files)
        ]
        return write_manifest(scratch / "photos.csv", lots), files
    if not source.is_file():
        raise GrainproofError(f"{source} does not exist; give a folder of photos or a lot manifest.")
    lots = read_manifest(source)
    files = [(source.parent / photo).resolve() for lot in lots for photo in lot.photos]
    if not files:
        raise GrainproofError(f"{source} lists no photos; the whole-process comparison embeds photos.")
    return source, files


def _timed(command: list[str], *, env: dict[str, str], what: str) -> float:
    """Seconds the command took from start to exit; GrainproofError with its last words if it failed."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise GrainproofError(f"{what} failed (exit {result.returncode}): " + " / ".join(tail))
    return seconds


def bench_embed_process(
    source: Path,
    *,
    settings: Settings | None = None,
    rounds: int = 1,
    progress: ProgressCallback | None = None,
) -> ProcessSpeed:
    """Whole-process time of the plain timm loop (grainproof/embed/naive_loop.py) and of `grainproof embed`
    (efficientnet_lite0) on the same photos, each in a fresh process, interleaved per round."""
    from grainproof.embed import naive_loop
    from grainproof.embed.backbones import REGISTRY
    from grainproof.embed.runtime import cpu_threads

    settings = settings or get_settings()
    if rounds < 1:
        raise GrainproofError("--process-rounds must be at least 1.")
    weights = REGISTRY["efficientnet_lite0"].weights
    assert weights is not None
    naive_s: list[float] = []
    cold_s: list[float] = []
    warm_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="grainproof-bench-process-") as scratch_dir:
        scratch = Path(scratch_dir)
        manifest, files = bench_photo_manifest(source, scratch)
        listing = scratch / "photos.txt"
        listing.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
        cache = scratch / "cache"
        threads = cpu_threads(settings.torch_threads)
        env = {
            **os.environ,
            "GRAINPROOF_DATA_DIR": str(scratch / "data"),
            "GRAINPROOF_CACHE_DIR": str(cache),
            "GRAINPROOF_BACKBONE": "efficientnet_lite0",
            "GRAINPROOF_EMBED_RUNTIME": settings.embed_runtime,
            "GRAINPROOF_TORCH_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),  # the loop's torch gets as many cores as ours, no more
        }
        # `-I`: the loop runs as a newcomer's script would, without grainproof's path or environment.
        naive = [sys.executable, "-I", str(Path(naive_loop.__file__)), str(weights.path()), str(listing)]
        ours = [sys.executable, "-c", "from grainproof.cli import main; main()", "embed", str(manifest)]
        for round_index in range(rounds):
            naive_s.append(_timed([*naive, str(scratch / "naive.npy")], env=env, what="The plain timm loop"))
            shutil.rmtree(cache, ignore_errors=True)  # nothing exported, compiled or embedded yet
            cold_s.append(_timed([*ours, "--out", str(scratch / "cold.csv")], env=env, what="grainproof embed"))
            shutil.rmtree(cache / "embeddings")  # the network stays ready; the photos are new again
            warm_s.append(_timed([*ours, "--out", str(scratch / "warm.csv")], env=env, what="grainproof embed"))
            if progress is not None:
                progress(round_index + 1, rounds)
    naive_median, cold_median, warm_median = (statistics.median(t) for t in (naive_s, cold_s, warm_s))
    return ProcessSpeed(
        source=str(source),
        photos=len(files),
        rounds=rounds,
        threads=threads,
        runtime=settings.embed_runtime,
        naive_s=naive_median,
        ours_cold_s=cold_median,
        ours_warm_s=warm_median,
        speedup_cold=naive_median / cold_median,
        speedup_warm=naive_median / warm_median,
    )


# ----------------------------------------------------------------------------------------------- invariance


@dataclass(frozen=True, slots=True, kw_only=True)
class SeparationFigures:
    """Distances among held-out-phone lots: between regions vs within a region across phones, and their ratio."""

    between_region: float
    within_region_across_phones: float
    ratio: float
    region_accuracy: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InvarianceResult:
    """The invariance benchmark: the same held-out lots without and with the device handling.

    Without: the card ignored, no learned correction. With: the calibration card (colour and scale) and the
    learned per-device correction (DeviceNuisanceRemover) trained on the other phones' lots. `card_only`
    shows the card's share.
    """

    world: str
    train_devices: tuple[str, ...]
    held_out_devices: tuple[str, ...]
    train_lots: int
    test_lots: int
    removed_directions: int
    without: SeparationFigures
    card_only: SeparationFigures
    with_device_handling: SeparationFigures

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def separation(
    X: np.ndarray,
    regions: Sequence[str],
    devices: Sequence[str],
    groups: Sequence[Hashable],
) -> tuple[float, float]:
    """Mean distance between lots of different regions, and between lots of one region, over pairs of lots
    taken with different phones.

    Pairs are only formed inside a group (species, variety, season), so neither figure mixes varieties.
    """
    between: list[float] = []
    within: list[float] = []
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    for indices in members.values():
        idx = np.asarray(indices)
        if len(idx) < 2:
            continue
        diff = X[idx][:, None, :] - X[idx][None, :, :]
        dist = np.sqrt((diff**2).sum(axis=-1))
        region = np.asarray([regions[i] for i in idx], dtype=object)
        device = np.asarray([devices[i] for i in idx], dtype=object)
        upper = np.triu(np.ones((len(idx), len(idx)), dtype=bool), k=1)
        same_region = region[:, None] == region[None, :]
        other_phone = device[:, None] != device[None, :]
        # Both sets are pairs taken with different phones, so the only thing that differs between them is the region.
        between.extend(dist[upper & ~same_region & other_phone])
        within.extend(dist[upper & same_region & other_phone])
    if not between or not within:
        raise GrainproofError(
            "The held-out lots have no pairs to compare (need 2+ regions and 2+ held-out phones per variety and "
            "season); simulate more lots or hold out more phones."
        )
    return float(np.mean(between)), float(np.mean(within))


def region_accuracy(
    train: np.ndarray,
    train_regions: Sequence[str],
    train_groups: Sequence[Hashable],
    test: np.ndarray,
    test_regions: Sequence[str],
    test_groups: Sequence[Hashable],
) -> float:
    """Share of held-out lots whose nearest training lot (same species, variety, season) has their region."""
    hits = 0
    counted = 0
    for i, group in enumerate(test_groups):
        candidates = [j for j, g in enumerate(train_groups) if g == group]
        if not candidates:
            continue
        distances = np.linalg.norm(train[candidates] - test[i], axis=1)
        hits += train_regions[candidates[int(np.argmin(distances))]] == test_regions[i]
        counted += 1
    return hits / counted if counted else float("nan")


def _figures(
    train: np.ndarray,
    test: np.ndarray,
    train_meta: list[dict[str, str]],
    test_meta: list[dict[str, str]],
) -> SeparationFigures:
    def group(m: dict[str, str]) -> tuple[str, ...]:
        return (m["species"], m["variety"], m["season"])

    between, within = separation(
        test, [m["region"] for m in test_meta], [m["device"] for m in test_meta], [group(m) for m in test_meta]
    )
    accuracy = region_accuracy(
        train,
        [m["region"] for m in train_meta],
        [group(m) for m in train_meta],
        test,
        [m["region"] for m in test_meta],
        [group(m) for m in test_meta],
    )
    return SeparationFigures(
        between_region=between, within_region_across_phones=within, ratio=between / within, region_accuracy=accuracy
    )


#: The benchmark's own world: one species and season, five départements far apart, so that every
#: (variety, region) cell holds lots from many phones (the demo world spreads lots over far more cells).
BENCH_REGIONS: tuple[str, ...] = ("02", "17", "31", "51", "89")


def simulate_bench_world(out_dir: Path, *, lots: int, seed: int, progress: ProgressCallback | None = None) -> Path:
    """A small world for the benchmark, made with grainproof.simulate (no fraud: truth = declarations)."""
    from grainproof.simulate import WorldConfig, simulate_world

    config = WorldConfig(
        lots=lots,
        photos_per_lot=2,
        seed=seed,
        fraud_rate=0.0,
        species=("soft_wheat",),
        seasons=(2024,),
        regions=BENCH_REGIONS,
        unreferenced_regions=(),
    )
    simulate_world(config, out_dir, progress=progress)
    return out_dir


def bench_invariance(
    world_dir: Path | None = None,
    *,
    held_out: int = 4,
    seed: int = 0,
    lots: int = 240,
    settings: Settings | None = None,
    simulate_progress: ProgressCallback | None = None,
    progress: ProgressCallback | None = None,
    label: str | None = None,
) -> InvarianceResult:
    """Train the device handling on some phones' lots, measure on lots taken with `held_out` unseen phones."""
    from grainproof.embed.batch import embed_lots
    from grainproof.embed.embedder import get_embedder
    from grainproof.manifest import read_manifest

    settings = settings or get_settings()
    label = label or (str(world_dir) if world_dir else f"simulated ({lots} lots, seed {seed})")
    with tempfile.TemporaryDirectory(prefix="grainproof-bench-world-") as scratch:
        if world_dir is None:
            world_dir = simulate_bench_world(Path(scratch), lots=lots, seed=seed, progress=simulate_progress)
        truth = world_dir / "lots.csv"
        if not truth.is_file():
            raise GrainproofError(f"{world_dir} has no lots.csv; give a directory written by `grainproof simulate`.")
        records = read_manifest(truth)
        usable = [r for r in records if r.photos and r.device and r.claim.origin.region and r.claim.harvest_date]
        embedder = get_embedder(settings=settings)
        # Each photo is embedded twice (card ignored, card used): the progress bar counts both passes.
        total = 2 * sum(len(r.photos) for r in usable)

        def stage(offset: int) -> ProgressCallback | None:
            if progress is None:
                return None
            return lambda done, _total: progress(offset + done, total)

        plain = embed_lots(usable, truth.parent, embedder=embedder.without_card(), progress=stage(0))
        carded = embed_lots(usable, truth.parent, embedder=embedder, progress=stage(total // 2))
    meta = [
        {
            "species": r.claim.species,
            "variety": r.claim.variety,
            "region": r.claim.origin.region or "",
            "season": str(r.claim.season),
            "device": r.device or "",
        }
        for r in usable
    ]
    phones = sorted({m["device"] for m in meta})
    if len(phones) < held_out + 2:
        raise GrainproofError(
            f"The world has {len(phones)} phone profiles; holding out {held_out} needs at least {held_out + 2}."
        )
    rng = np.random.default_rng(seed)
    unseen = sorted(str(p) for p in rng.choice(phones, size=held_out, replace=False))
    is_test = np.asarray([m["device"] in unseen for m in meta])
    train_meta = [m for m, t in zip(meta, is_test, strict=True) if not t]
    test_meta = [m for m, t in zip(meta, is_test, strict=True) if t]
    blocks = feature_blocks(embedder.backbone_id, embedder.dim)

    def split(embeddings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        X = np.stack([embeddings[r.lot_id].vector.astype(np.float64) for r in usable])
        scale = _block_scale(X[~is_test], blocks)  # the training lots' spread, as the reference space does
        return X[~is_test] / scale, X[is_test] / scale

    plain_train, plain_test = split(plain)
    train, test = split(carded)
    remover = DeviceNuisanceRemover().fit(
        train,
        [m["device"] for m in train_meta],
        [(m["species"], m["variety"], m["region"], m["season"]) for m in train_meta],
    )
    return InvarianceResult(
        world=label,
        train_devices=tuple(p for p in phones if p not in unseen),
        held_out_devices=tuple(unseen),
        train_lots=int((~is_test).sum()),
        test_lots=int(is_test.sum()),
        removed_directions=int(remover.n_components_),
        without=_figures(plain_train, plain_test, train_meta, test_meta),
        card_only=_figures(train, test, train_meta, test_meta),
        with_device_handling=_figures(remover.transform(train), remover.transform(test), train_meta, test_meta),
    )


def _block_scale(X: np.ndarray, blocks: tuple[int, ...]) -> np.ndarray:
    """Per-column divisor: each column's SD times its block's weight, so distances weigh features as the
    reference space does (grainproof.reference.space)."""
    sd = X.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return np.asarray(sd * block_scale(blocks)) if blocks else np.asarray(sd)


# --------------------------------------------------------------------------------------- kernel measurements


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasurementFigures:
    """How well one lot measurement tracks the simulator's true trait, within varieties."""

    feature: str
    trait: str
    correlation: float
    lots: int


#: Measured feature -> the latent trait it estimates (log scale for sizes and lightness, as measured); "a/b"
#: is the ratio of two traits.
MEASURED_TRAITS: tuple[tuple[str, str, bool], ...] = (
    ("log_length_mm", "length_mm", True),
    ("log_width_mm", "width_mm", True),
    ("log_lightness", "lightness", True),
    ("redness", "redness", False),
    ("weathering", "weathering", False),
    ("broken_share", "broken_share", False),
    ("shrivelled_share", "shrivelled_share", False),
    ("impurity_share", "impurity_share", False),
    ("log_aspect", "length_mm/width_mm", True),
    ("roundness", "width_mm/length_mm", False),
    ("eccentricity", "length_mm/width_mm", False),
    ("tray_lightness", "lightness", True),
    ("tray_redness", "redness", False),
    ("log_length", "length_mm", True),
    ("log_width", "width_mm", True),
)


def _trait(latent: np.ndarray, columns: Sequence[str], trait: str) -> float:
    if "/" in trait:
        top, bottom = trait.split("/")
        return float(latent[list(columns).index(top)] / latent[list(columns).index(bottom)])
    return float(latent[list(columns).index(trait)])


def measurement_agreement(
    features: dict[str, np.ndarray],
    varieties: dict[str, str],
    latent: dict[str, np.ndarray],
    latent_columns: Sequence[str],
    measured_names: Sequence[str],
) -> list[MeasurementFigures]:
    """Pooled within-variety correlation of each measured lot feature with its true trait.

    Lots that did not measure a feature (its group of measurements all zeros: grainproof.measurement_layout)
    are left out of its figure. Centring each variety first keeps the differences between varieties (far
    larger than provenance) from inflating the figure.
    """
    from grainproof.measurement_layout import missing_measurements

    width = len(measured_names)
    known = [lot for lot in sorted(features) if lot in latent]
    missing = missing_measurements(np.array([features[lot][:width] for lot in known]).reshape(-1, width), width)
    results = []
    for name, trait, logged in MEASURED_TRAITS:
        if name not in measured_names or any(t not in latent_columns for t in trait.split("/")):
            continue
        f_index = list(measured_names).index(name)
        lots = [lot for lot, absent in zip(known, missing[:, f_index], strict=True) if not absent]
        if not lots:
            continue
        measured = np.array([features[lot][f_index] for lot in lots], dtype=np.float64)
        truth = np.array([_trait(latent[lot], latent_columns, trait) for lot in lots], dtype=np.float64)
        if logged:
            truth = np.log(truth)
        for variety in {varieties[lot] for lot in lots}:
            rows = np.array([varieties[lot] == variety for lot in lots])
            measured[rows] -= measured[rows].mean()
            truth[rows] -= truth[rows].mean()
        denominator = float(np.sqrt((measured**2).sum() * (truth**2).sum()))
        correlation = float((measured * truth).sum() / denominator) if denominator > 0 else float("nan")
        results.append(MeasurementFigures(feature=name, trait=trait, correlation=correlation, lots=len(lots)))
    return results
