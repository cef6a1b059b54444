"""Scoring one claim against a reference model: p-values, posterior, admixture and nearest reference lots.

Pure: a model and arrays in, a `ClaimScore` out. `grainproof.scoring.verdict` turns it into words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grainproof.domain import Alternative, NearestReference
from grainproof.errors import ClaimError, ModelError, UnknownVarietyError
from grainproof.reference.calibration import cell_distances, cell_log_posterior, declaration_nonconformity
from grainproof.reference.model import ReferenceModel, SpeciesReference
from grainproof.reference.phone_scale import apply_phone_scale
from grainproof.reference.space import NETWORK_ONLY
from grainproof.scoring.conformal import conformal_p_value

#: Said of a lot whose photos gave no kernel measurements, though the reference was built with them.
UNMEASURED_WARNING = (
    "The kernels in this lot's photos could not be measured (they barely stand out from the tray, or touch each "
    "other), so the score rests on the image features alone, which tell origins apart far less well; photograph "
    "the sample again on a plain tray of a contrasting colour, kernels spread apart."
)
#: Said of a lot measured without the card on a phone the reference has no size scale for.
UNSEEN_PHONE_SIZE_WARNING = (
    "The photos show no calibration card and no reference lot without the card was photographed with this phone, "
    "so the kernels' sizes could not be put on the reference's scale: the lot was judged on its shapes, shares "
    "and colours alone. Lay the grainproof card on the tray, or add reference lots photographed with this phone."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimScore:
    """Everything the model says about one declaration, before the verdict policy."""

    plausibility: float
    origin_plausibility: float
    season_plausibility: float | None
    nonconformity: float
    declared_origin: str
    declared_season: int | None
    declared_probability: float
    alternatives: tuple[Alternative, ...]
    outside_reference_probability: float
    admixture: float | None
    admixture_source: tuple[str, int | None] | None
    nearest_reference_lots: tuple[NearestReference, ...]
    low_confidence: bool  # thin reference for the declared cell, or the kernels could not be measured
    thin_reference: bool  # few or no reference lots for the declared cell (or its origin or season unseen)
    measured: bool  # the lot's kernel measurements are in its vector (False: the image features alone)
    warnings: tuple[str, ...]


def check_vector(model: ReferenceModel, vector: np.ndarray, *, what: str = "lot vector") -> np.ndarray:
    """The vector as float64 (d,), or a clear error for the wrong dimension or non-finite values."""
    array = np.asarray(vector, dtype=np.float64)
    if array.ndim != 1:
        raise ClaimError(f"The {what} must be one vector, got an array of shape {array.shape}.")
    if array.shape[0] != model.dim:
        raise ModelError(
            f"The {what} has {array.shape[0]} features but the reference model was built on {model.dim}; "
            "embed the photos with the model's backbone."
        )
    if not np.all(np.isfinite(array)):
        raise ClaimError(f"The {what} has NaN or infinite values; re-embed the photos.")
    return array


def species_reference(model: ReferenceModel, species: str, variety: str) -> tuple[SpeciesReference, int]:
    """The species' reference and the variety's index; UnknownVarietyError / ClaimError naming what is known."""
    if species not in model.species:
        owners = sorted(s for s, ref in model.species.items() if variety in ref.varieties)
        if owners:
            raise ClaimError(
                f"Variety {variety!r} is a {owners[0]} variety in the reference model, but the claim says species "
                f"{species!r}; correct the species."
            )
        raise UnknownVarietyError(
            f"The reference model has no species {species!r} (it knows {', '.join(sorted(model.species))}); "
            "check the species or build a reference that includes it."
        )
    ref = model.species[species]
    if variety not in ref.varieties:
        raise UnknownVarietyError(
            f"The reference model has no {species} variety {variety!r} (it knows {', '.join(ref.varieties)}); "
            "check the variety name or add reference lots of it."
        )
    return ref, ref.varieties.index(variety)


def score_claim(
    model: ReferenceModel,
    *,
    species: str,
    variety: str,
    origin_unit: str,
    season: int | None,
    vector: np.ndarray,
    unit_vectors: np.ndarray | None = None,
    n_alternatives: int = 5,
    n_nearest: int = 5,
    device: str | None = None,
) -> ClaimScore:
    """Score a lot vector (d,) against its declared cell; see docs/scoring.md for the method.

    `device`, the phone that took the photos, puts sizes measured without the card on the reference's scale.
    """
    ref, variety_index = species_reference(model, species, variety)
    cells = ref.cells
    if cells is None:
        raise ModelError("The reference model is not fitted; load it with ReferenceModel.load.")
    raw = check_vector(model, vector)
    scaled, phone_scaled = apply_phone_scale(raw[None, :], [device or ""], [variety], model.phone_scales.get(species))
    raw = scaled[0]
    warnings: list[str] = [] if phone_scaled[0] else [UNSEEN_PHONE_SIZE_WARNING]
    low_confidence = False
    n_o, n_s = len(ref.origins), len(ref.seasons)
    dated_reference = any(s is not None for s in ref.seasons)
    if season is not None and not dated_reference:
        warnings.append("The reference lots have no harvest dates, so the declared season was not checked.")
        season = None
    # An origin unit or season the reference has never seen gets one extra row/column in the grid.
    extra_origin: list[int] | None = None
    if origin_unit in ref.origins:
        origin_index = ref.origins.index(origin_unit)
    else:
        origin_index = n_o
        extra_origin = [ref.origins.index(o) for o in model.origin_adjacency.get(origin_unit, []) if o in ref.origins]
        low_confidence = True
        borrowed = f"its neighbours ({', '.join(ref.origins[i] for i in extra_origin)})" if extra_origin else "none"
        warnings.append(
            f"Origin unit {origin_unit} has no {species} reference lots; its expected appearance is borrowed from "
            f"{borrowed if extra_origin else 'the variety as a whole'}."
        )
    extra_season = False
    undated = season is None
    if undated:
        season_index = ref.seasons.index(None) if None in ref.seasons else 0
    elif season in ref.seasons:
        season_index = ref.seasons.index(season)
    else:
        season_index = n_s
        extra_season = True
        low_confidence = True
        warnings.append(f"Season {season} has no {species} reference lots; only its origin and variety are used.")
    z = ref.space.transform(raw[None, :])
    # Measured and unmeasured lots are calibrated apart (Mondrian conformal): see calibration_strata.
    stratum = int(ref.space.calibration_strata(raw[None, :])[0])
    measured = stratum != NETWORK_ONLY
    grid = {"extra_origin_neighbours": extra_origin, "extra_season": extra_season}
    outside_prior = model.options.outside_prior
    # Conformal p-values compare the lot's score under each fold's model with that fold's calibration
    # lots, scored by the same model: the lot and those lots are exchangeable (cross-conformal).
    fold_distances = np.stack(
        [cell_distances(fold, z, variety_index, **grid)[0][0] for fold in ref.fold_cells]  # type: ignore[arg-type]
    )
    # Every fold at once: one row per fold, each with its own tau.
    fold_taus = np.array([fold.outside_distance for fold in ref.fold_cells])
    n_folds = len(fold_taus)
    fold_scores = declaration_nonconformity(
        fold_distances,
        fold_taus,
        np.full(n_folds, origin_index),
        np.full(n_folds, season_index),
        np.full(n_folds, undated),
    )
    distances = cell_distances(cells, z, variety_index, **grid)[0]  # type: ignore[arg-type]
    joint_score = float(
        declaration_nonconformity(
            distances, cells.outside_distance, np.array([origin_index]), np.array([season_index]), np.array([undated])
        )[0, 0]
    )
    min_cal = model.options.min_calibration
    origin_p = _p(ref.calibration_scores(1, (variety_index, origin_index), min_cal, stratum), fold_scores[:, 1])
    season_p = (
        None
        if undated
        else _p(ref.calibration_scores(2, (variety_index, season_index), min_cal, stratum), fold_scores[:, 2])
    )
    joint_p = (
        origin_p
        if undated
        else _p(
            ref.calibration_scores(0, (variety_index, origin_index, season_index), min_cal, stratum),
            fold_scores[:, 0],
        )
    )
    declared_count = (
        float(cells.cell_counts[variety_index, origin_index, season_index])
        if origin_index < n_o and season_index < n_s
        else 0.0
    )
    if declared_count < model.options.min_cell_lots:
        low_confidence = True
    thin_reference = low_confidence
    if not measured:
        # Still calibrated (among unmeasured lots), but with little power: on the simulated world such lots'
        # false claims were told from genuine ones hardly better than chance (docs/scoring.md).
        low_confidence = True
        warnings.append(UNMEASURED_WARNING)
    # The reported posterior weights cells by their share of the reference (a production-share proxy).
    shape = distances.shape[1:]
    prior = np.full(shape, 0.5)
    prior[:n_o, :n_s] += cells.cell_counts.sum(axis=0)
    shared_post, shared_outside = cell_log_posterior(
        cells,
        z,
        variety_index,
        outside_prior=outside_prior,
        prior=prior,
        **grid,  # type: ignore[arg-type]
    )
    cell_posterior = np.exp(shared_post[0])
    outside = float(np.exp(shared_outside[0]))
    labels_o = [*ref.origins, origin_unit] if extra_origin is not None else list(ref.origins)
    labels_s = [*ref.seasons, season] if extra_season else list(ref.seasons)
    picks: list[tuple[int, int]] = []
    for flat in np.argsort(-cell_posterior.ravel(), kind="stable"):
        if len(picks) >= n_alternatives:
            break
        o, s = divmod(int(flat), shape[1])
        if o != origin_index or (not undated and s != season_index):
            picks.append((o, s))
    # Each alternative's joint score under each fold, in one call: row f * len(picks) + j.
    alt_scores = np.zeros((n_folds, 0))
    if picks:
        alt_origins = np.tile(np.array([o for o, _ in picks], dtype=np.int64), n_folds)
        alt_seasons = np.tile(np.array([s for _, s in picks], dtype=np.int64), n_folds)
        alt_scores = declaration_nonconformity(
            np.repeat(fold_distances, len(picks), axis=0),
            np.repeat(fold_taus, len(picks)),
            alt_origins,
            alt_seasons,
            np.zeros(len(alt_origins), dtype=bool),
        )[:, 0].reshape(n_folds, len(picks))
    alternatives: list[Alternative] = []
    for j, (o, s) in enumerate(picks):
        p_alt = _p(ref.calibration_scores(0, (variety_index, o, s), min_cal, stratum), alt_scores[:, j])
        alternatives.append(
            Alternative(
                origin_unit=labels_o[o],
                season=labels_s[s],
                probability=_clip(float(cell_posterior[o, s])),
                p_value=p_alt,
            )
        )
    declared_probability = float(
        cell_posterior[origin_index].sum() if undated else cell_posterior[origin_index, season_index]
    )
    admixture, source = _admixture(
        ref,
        cells,
        variety_index,
        z[0],
        origin_index,
        season_index if not undated else None,
        shape,
        extra_origin,
        extra_season,
        unit_vectors,
        labels_o,
        labels_s,
    )
    nearest = nearest_reference_lots(ref, variety_index, z[0], n_nearest)
    return ClaimScore(
        plausibility=joint_p,
        origin_plausibility=origin_p,
        season_plausibility=season_p,
        nonconformity=joint_score,
        declared_origin=origin_unit,
        declared_season=season,
        declared_probability=_clip(declared_probability),
        alternatives=tuple(alternatives),
        outside_reference_probability=_clip(outside),
        admixture=admixture,
        admixture_source=source,
        nearest_reference_lots=nearest,
        low_confidence=low_confidence,
        thin_reference=thin_reference,
        measured=measured,
        warnings=tuple(warnings),
    )


def _p(calibration: list[np.ndarray], scores: np.ndarray) -> float:
    """Cross-conformal p-value: (1 + sum over folds of #{calibration_f >= score_f}) / (n + 1)."""
    at_least = sum(
        float(conformal_p_value(cal, s)) * (len(cal) + 1) - 1 for cal, s in zip(calibration, scores, strict=True)
    )
    total = sum(len(cal) for cal in calibration)
    return float((1.0 + at_least) / (total + 1.0))


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _admixture(
    ref: SpeciesReference,
    cells: object,
    variety: int,
    z: np.ndarray,
    origin_index: int,
    season_index: int | None,
    shape: tuple[int, ...],
    extra_origin: list[int] | None,
    extra_season: bool,
    unit_vectors: np.ndarray | None,
    labels_o: list[str],
    labels_s: list[int | None],
) -> tuple[float | None, tuple[str, int | None] | None]:
    """Share of the lot better explained by another origin: a two-component mixture on the segment
    from the declared cell's mean to the other origin's cell that explains the lot best.

    The share is the lot vector's position on that segment; with per-photo/per-kernel unit vectors tight
    enough to separate the two ends, it is the EM mixing weight of the units along the segment.
    """
    from grainproof.reference.cells import CellModel

    assert isinstance(cells, CellModel)
    means, _ = cells.grid(variety, extra_origin_neighbours=extra_origin, extra_season=extra_season)
    whitened = means @ cells.whitener
    s_decl = season_index if season_index is not None else None
    if s_decl is None:
        # No declared season: the declared cell is the origin's season closest to the lot.
        y0 = z @ cells.whitener
        s_decl = int(np.argmin(((whitened[origin_index] - y0) ** 2).sum(-1)))
    centre = whitened[origin_index, s_decl]
    y = z @ cells.whitener - centre
    others = np.array([o != origin_index for o in range(shape[0])])
    if not others.any():
        return None, None
    directions = whitened[others] - centre  # (O-1, S, k)
    flat = directions.reshape(-1, directions.shape[-1])
    norms = np.maximum((flat**2).sum(1), 1e-12)
    shares = np.clip(flat @ y / norms, 0.0, 1.0)
    residual = ((y[None, :] - shares[:, None] * flat) ** 2).sum(1)
    best = int(np.argmin(residual))
    other_origins = np.flatnonzero(others)
    o_best, s_best = other_origins[best // shape[1]], best % shape[1]
    share = float(shares[best])
    if unit_vectors is not None and len(unit_vectors) >= 2:
        units = np.asarray(unit_vectors, dtype=np.float64)
        if units.ndim != 2 or units.shape[1] != ref.space.input_dim:
            raise ModelError(f"Unit vectors must have shape (m, {ref.space.input_dim}); got {units.shape}.")
        if not np.all(np.isfinite(units)):
            raise ClaimError("The per-photo unit vectors have NaN or infinite values; re-embed the photos.")
        positions = (ref.space.transform(units) @ cells.whitener - centre) @ flat[best] / norms[best]
        # Unit vectors (one kernel or patch) live at another scale than lot vectors: keep only their
        # spread around the lot's own position, and trust them only when they resolve the two ends.
        positions = positions - positions.mean() + shares[best]
        if float(positions.std()) <= MAX_UNIT_SPREAD:
            share = _mixture_weight(positions)
    return _clip(share), (labels_o[o_best], labels_s[s_best])


#: Units spread wider than this along the declared-to-other segment (its length is 1) cannot tell the two apart.
MAX_UNIT_SPREAD = 0.5


def _mixture_weight(positions: np.ndarray, iterations: int = 50) -> float:
    """EM weight of the component at 1 in a two-Gaussian mixture with means fixed at 0 and 1, shared variance."""
    x = np.asarray(positions, dtype=np.float64)
    weight = float(np.clip(x.mean(), 0.05, 0.95))
    variance = max(float(x.var()), 1e-3)
    for _ in range(iterations):
        log_a = np.log(max(1.0 - weight, 1e-12)) - 0.5 * x**2 / variance
        log_b = np.log(max(weight, 1e-12)) - 0.5 * (x - 1.0) ** 2 / variance
        top = np.maximum(log_a, log_b)
        resp = np.exp(log_b - top) / (np.exp(log_a - top) + np.exp(log_b - top))
        weight = float(resp.mean())
        variance = max(float(np.mean((1 - resp) * x**2 + resp * (x - 1.0) ** 2)), 1e-3)
    return weight


def nearest_reference_lots(ref: SpeciesReference, variety: int, z: np.ndarray, n: int) -> tuple[NearestReference, ...]:
    """The variety's `n` reference lots nearest to reduced coordinates z (k,), exactly: nearest first, ties by id.

    Distance is Euclidean in whitened coordinates; `grainproof.store.vector_index` searches the same space.
    """
    if ref.cells is None:
        raise ModelError("The reference model is not fitted; load it with ReferenceModel.load.")
    rows, whitened = ref.whitened_lots(variety)
    if n <= 0 or not len(rows):
        return ()
    dist = np.sqrt(((whitened - np.asarray(z, dtype=np.float64).reshape(-1) @ ref.cells.whitener) ** 2).sum(1))
    take = min(n, len(rows))
    top = np.argpartition(dist, take - 1)[:take]
    top = top[np.lexsort((ref.lot_ids[rows][top], dist[top]))]
    return reference_lots_at(ref, rows[top], dist[top])


def reference_lots_at(ref: SpeciesReference, rows: np.ndarray, distances: np.ndarray) -> tuple[NearestReference, ...]:
    """Evidence for reference lots given by position in the species' lot arrays, in the order given."""
    out = []
    for row, distance in zip(rows, distances, strict=True):
        _, o, s = ref.cell_keys[ref.lot_cells[row]]
        out.append(
            NearestReference(
                lot_id=str(ref.lot_ids[row]),
                origin_unit=ref.origins[o],
                season=ref.seasons[s],
                distance=float(distance),
            )
        )
    return tuple(out)
