"""How long measuring one phone photo's kernels without the card takes, stage by stage, on one core.

`grainproof bench embed` prints it beside the network's speed. The photo is a 12-megapixel (4032 x 3024)
tray rendered by the simulator; ours measures it at MEASURE_LONG_SIDE, the baseline runs the same steps
at the resolution the JPEG decodes to (half size, DCT scaling), in the same run.
"""

from __future__ import annotations

import dataclasses
import io
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from grainproof.embed.embedder import measure_photo
from grainproof.embed.photos import NOMINAL_FIELD_OF_VIEW_MM, KernelView, PreparedPhoto, open_photo
from grainproof.embed.plain_tray import StageTimes, plain_tray_view
from grainproof.errors import GrainproofError
from grainproof.progress import ProgressCallback

#: The time one 12-megapixel photo's measurement may take on one core.
BUDGET_MS = 150.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasureSpeed:
    """Median milliseconds per stage and in all, ours and the full-resolution baseline, and their ratio."""

    photo: tuple[int, int]  # width, height of the JPEG
    decoded: tuple[int, int]  # what the JPEG decodes to
    kernels_found: int
    rounds: int
    stages_ms: dict[str, float]
    total_ms: float
    full_resolution_ms: float
    speedup: float
    budget_ms: float = BUDGET_MS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def twelve_megapixel_tray(seed: int = 0, *, long_side: int = 4032) -> bytes:
    """A 4032 x 3024 JPEG of a soft-wheat lot on a white tray, no card, from the simulator."""
    from grainproof.simulate.devices import encode_jpeg, get_phone, sample_lighting
    from grainproof.simulate.photos import render_photo
    from grainproof.simulate.render import get_tray
    from grainproof.simulate.traits import LATENT_TRAITS

    rng = np.random.default_rng(seed)
    phone = dataclasses.replace(get_phone("galaxy-s21"), long_side=long_side)
    typical = {"length_mm": 6.8, "width_mm": 3.6, "lightness": 1.0, "redness": 0.0, "weathering": 0.12}
    traits = np.array([typical.get(name, 0.05) for name in LATENT_TRAITS])
    pixels = render_photo(
        traits, "soft_wheat", "aurelio", phone, sample_lighting(rng), get_tray("white_plastic"), rng, with_card=False
    )
    return encode_jpeg(pixels, phone)


def _measure_once(data: bytes, long_side: int) -> tuple[StageTimes, tuple[int, int]]:
    times = StageTimes()
    image = open_photo(data, "bench.jpg", min_side=64, max_pixels=50_000_000)
    times.lap("decode (DCT-scaled)")
    view = plain_tray_view(image, field_of_view_mm=NOMINAL_FIELD_OF_VIEW_MM, long_side=long_side, times=times)
    values, _ = measure_photo(_prepared(view))
    times.lap("kernels: split, measure, describe")
    if not values.any():
        raise GrainproofError("The benchmark photo's kernels were not measured; the benchmark cannot time them.")
    return times, image.size


def _prepared(view: KernelView) -> PreparedPhoto:
    """The kernel view in the shape measure_photo takes (the network's canvas is not part of measuring)."""
    empty = np.zeros((1, 1), dtype=np.float32)
    return PreparedPhoto(pixels=empty, cell_weights=empty, content_hash="", warnings=(), kernels=view)


def bench_measure(
    *, rounds: int = 5, seed: int = 0, progress: ProgressCallback | None = None, data: bytes | None = None
) -> MeasureSpeed:
    """Time measuring a 12-megapixel tray photo on one core, ours and at full resolution, interleaved."""
    import cv2
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    from grainproof.embed.morphometrics import measure_kernels
    from grainproof.embed.plain_tray import MEASURE_LONG_SIDE

    if rounds < 1:
        raise GrainproofError("--rounds must be at least 1.")
    data = data if data is not None else twelve_megapixel_tray(seed)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1):
            ours: list[StageTimes] = []
            baseline: list[float] = []
            _measure_once(data, MEASURE_LONG_SIDE)  # warm-up: imports and first allocations
            for round_index in range(rounds):
                times, decoded = _measure_once(data, MEASURE_LONG_SIDE)
                ours.append(times)
                baseline.append(sum(_measure_once(data, 1 << 16)[0].values()))
                if progress is not None:
                    progress(round_index + 1, rounds)
    finally:
        cv2.setNumThreads(threads)
    image = open_photo(data, "bench.jpg", min_side=64, max_pixels=50_000_000)
    view = plain_tray_view(image, field_of_view_mm=NOMINAL_FIELD_OF_VIEW_MM)
    kernels = len(measure_kernels(view.reflectance, view.kernel_mask, view.px_per_mm))
    stages = {stage: 1e3 * statistics.median(t.get(stage, 0.0) for t in ours) for stage in ours[0]}
    total = 1e3 * statistics.median(sum(t.values()) for t in ours)
    full = 1e3 * statistics.median(baseline)
    with Image.open(io.BytesIO(data)) as header:
        photo = header.size
    return MeasureSpeed(
        photo=photo,
        decoded=decoded,
        kernels_found=kernels,
        rounds=rounds,
        stages_ms=stages,
        total_ms=total,
        full_resolution_ms=full,
        speedup=full / total if total > 0 else float("nan"),
    )
