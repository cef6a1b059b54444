"""`grainproof bench scoring`: build, update, load and verify times, each beside a baseline from the same run."""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grainproof.progress import ProgressCallback
from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.synthetic import gaussian_world


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchRow:
    measure: str
    ours: str
    baseline: str
    ratio: str
    baseline_name: str


def _timed(fn: object) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()  # type: ignore[operator]
    return result, time.perf_counter() - start


def run_scoring_bench(
    *, lots: int, dim: int, update_lots: int, claims: int, seed: int = 0, progress: ProgressCallback | None = None
) -> list[BenchRow]:
    """Measure on a Gaussian world (20 origins x 3 seasons x 3 varieties): see docs/scoring.md for the figures."""
    world = gaussian_world(dim=dim, varieties=3, origins=20, seasons=3, devices=4, origin_scale=0.3, seed=seed)
    reference = world.lots(lots, seed=seed + 1, prefix="ref")
    extra = world.lots(update_lots, seed=seed + 2, prefix="new")
    test = world.lots(claims, seed=seed + 3, prefix="claim")
    rows: list[BenchRow] = []
    model, t_build = _timed(lambda: fit_reference_model(reference, seed=seed))
    assert isinstance(model, ReferenceModel)
    if progress:
        progress(1, 5)

    def sklearn_baseline() -> None:
        from sklearn.decomposition import PCA
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.preprocessing import StandardScaler

        x = np.asarray([lot.features for lot in reference])
        labels = [f"{lot.claim.variety}|{lot.claim.origin.region}|{lot.claim.season}" for lot in reference]
        z = PCA(n_components=min(64, dim), random_state=seed).fit_transform(StandardScaler().fit_transform(x))
        LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(z, labels)

    _, t_base = _timed(sklearn_baseline)
    rows.append(
        BenchRow(
            measure=f"build ({lots} lots, cross-conformal)",
            ours=f"{t_build:.2f} s",
            baseline=f"{t_base:.2f} s",
            ratio=f"{t_build / t_base:.2f}",
            baseline_name="sklearn scaler+PCA+LDA fit (no calibration)",
        )
    )
    updated, t_update = _timed(lambda: model.update(extra))
    rebuilt, t_rebuild = _timed(lambda: fit_reference_model([*reference, *extra], seed=seed))
    assert isinstance(updated, ReferenceModel) and isinstance(rebuilt, ReferenceModel)
    if progress:
        progress(2, 5)
    rows.append(
        BenchRow(
            measure=f"update (+{update_lots} lots)",
            ours=f"{t_update:.3f} s",
            baseline=f"{t_rebuild:.2f} s",
            ratio=f"{t_update / t_rebuild:.3f}",
            baseline_name="full rebuild",
        )
    )

    def p_values(m: ReferenceModel) -> np.ndarray:
        return np.array(
            [
                score_claim(
                    m,
                    species=c.claim.species,
                    variety=c.claim.variety,
                    origin_unit=c.claim.origin.region or "",
                    season=c.claim.season,
                    vector=np.asarray(c.features),
                ).plausibility
                for c in test
            ]
        )

    p_updated, t_verify = _timed(lambda: p_values(updated))
    p_rebuilt = p_values(rebuilt)
    if progress:
        progress(3, 5)
    gap = np.abs(np.asarray(p_updated) - p_rebuilt)
    rows.append(
        BenchRow(
            measure="updated vs rebuilt p-values",
            ours=f"mean |dp| {gap.mean():.3f}, max {gap.max():.3f}",
            baseline="0",
            ratio="-",
            baseline_name="full rebuild",
        )
    )
    reference_x = np.asarray([lot.features for lot in reference])

    def knn_baseline() -> None:
        for c in test:
            d = np.sqrt(((reference_x - np.asarray(c.features)) ** 2).sum(1))
            np.partition(d, 5)[:5]

    _, t_knn = _timed(knn_baseline)
    rows.append(
        BenchRow(
            measure="verify one claim (p-values, posterior, admixture, 5 nearest)",
            ours=f"{1000 * t_verify / claims:.2f} ms",
            baseline=f"{1000 * t_knn / claims:.2f} ms",
            ratio=f"{t_verify / t_knn:.2f}",
            baseline_name="brute-force 5-NN over raw reference vectors",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = updated.save(Path(tmp) / "model")
        _, t_load = _timed(lambda: ReferenceModel.load(path))
        raw_path = Path(tmp) / "raw.npy"
        np.save(raw_path, reference_x)
        _, t_npload = _timed(lambda: np.load(raw_path))
    if progress:
        progress(4, 5)
    rows.append(
        BenchRow(
            measure="load model",
            ours=f"{t_load * 1000:.0f} ms",
            baseline=f"{t_npload * 1000:.0f} ms",
            ratio=f"{t_load / t_npload:.2f}",
            baseline_name="np.load of the raw reference vectors (.npy)",
        )
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(
        BenchRow(
            measure="peak memory of this process",
            ours=f"{peak_mib:.0f} MiB",
            baseline=f"{reference_x.nbytes / 2**20:.0f} MiB",
            ratio=f"{peak_mib / max(reference_x.nbytes / 2**20, 1e-9):.1f}",
            baseline_name="the raw reference vectors alone (float64)",
        )
    )
    if progress:
        progress(5, 5)
    return rows
