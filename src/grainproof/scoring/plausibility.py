"""Scoring one claim against a reference model: p-values, posterior, admixture and nearest reference lots.

Pure: a model and arrays in, a `ClaimScore` out. `grainproof.scoring.verdict` turns it into words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grainproof.domain import Alternative, NearestReference, VarietyAlternative
from grainproof.errors import ClaimError, ModelError, UnknownVarietyError
from grainproof.reference.calibration import INSIDE, JOINT, ORIGIN, SEASON, VARIETY, score_declarations, shortlist
from grainproof.reference.cells import CellModel
from grainproof.reference.model import ModelOptions, ReferenceModel, SpeciesReference
from grainproof.reference.phone_scale import apply_phone_scale
from grainproof.reference.space import NETWORK_ONLY
from grainproof.reference.varieties import variety_nonconformity
from grainproof.scoring.conformal import conformal_p_values
from grainproof.scoring.mixture import ShareEstimate, gaussian_positions_share, mixture_share

#: Said of a lot whose photos gave no kernel measurements, though the reference was built with them.
UNMEASURED_WARNING = (
    "The kernels in this lot's photos could not be measured (they barely stand out from the tray, or touch each "
    "other), so the score rests on the image features alone, which tell origins apart far less well; photograph "
    "the sample again on a plain tray of a contrasting colour, kernels spread apart."
)
#: How the warning for photos from a phone no reference lot was photographed with begins (the monitor counts them).
UNSEEN_PHONE_WARNING_START = "No reference lot was photographed with this phone"
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
    declared_variety: str
    declared_origin: str
    declared_season: int | None
    declared_probability: float
    alternatives: tuple[Alternative, ...]
    #: Conformal p-value that the lot lies inside the reference: small when no reference cell fits it as well as
    #: genuine lots fit theirs (an origin missing from the reference, or not this species at all).
    outside_reference_p: float
    #: Share of the lot's units from another origin (None without units that can tell): an estimate with its
    #: interval and its p-value against "none"; verdicts show it only when significant.
    admixture: ShareEstimate | None
    admixture_source: tuple[str, int | None] | None
    #: Variety identity: the conformal p-value of the declared variety (None for a species of one variety), the
    #: other varieties most likely first, and the share of the lot's kernels of another variety (None without
    #: per-kernel units, or without kernel-level reference classes).
    variety_plausibility: float | None
    variety_calibration_lots: int
    variety_alternatives: tuple[VarietyAlternative, ...]
    #: With both the origin-and-season and the variety check: the p-value of the smaller of their two p-values,
    #: ranked among genuine calibration lots' smaller p-values. A verdict flags on it, so its false-alarm rate
    #: is alpha across the two checks, not up to twice alpha. None with one check (a species of one variety).
    checks_plausibility: float | None
    foreign_kernels: ShareEstimate | None
    nearest_reference_lots: tuple[NearestReference, ...]
    #: Genuine calibration lots the joint p-value is ranked among, and the smallest p-value they allow.
    calibration_lots: int
    min_reachable_p: float
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
    scales = model.phone_scales.get(species)
    scaled, phone_scaled = apply_phone_scale(raw[None, :], [device or ""], [variety], scales)
    raw = scaled[0]
    units = _checked_units(ref, unit_vectors)
    if units is not None:
        # The units' sizes go on the same per-phone scale as the lot's.
        units = apply_phone_scale(units, [device or ""] * len(units), [variety] * len(units), scales)[0]
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
    options = model.options
    # The posterior over the variety's cells weights each by its share of the reference (a production-share
    # proxy) and reads the same predictive densities the scores do; its top cells are the alternatives.
    # Only the origins near the lot (the same shortlist the scores use): the others' posterior is nil anyway.
    near = shortlist(cells, z, variety_index, np.array([origin_index]), n_o + (extra_origin is not None))
    log_density, _ = cells.log_densities(z, variety_index, origins=near, **grid)  # type: ignore[arg-type]
    shape = log_density.shape[1:]
    prior = np.full(shape, 0.5)
    prior[:n_o, :n_s] += cells.cell_counts[variety_index]
    joint_log = log_density[0] + np.log(prior / prior.sum())
    with np.errstate(invalid="ignore"):
        cell_posterior = np.exp(joint_log - joint_log.max())
    cell_posterior /= cell_posterior.sum()
    picks: list[tuple[int, int]] = []
    for flat in np.argsort(-cell_posterior.ravel(), kind="stable"):
        if len(picks) >= n_alternatives:
            break
        o, s = divmod(int(flat), shape[1])
        if o != origin_index or (not undated and s != season_index):
            picks.append((o, s))
    # Conformal p-values rank the lot's mean score under the fold models (`_p`) among the calibration lots, each
    # scored by the model that did not see it, by the same rule (score_lots). Row 0 is the declaration, the
    # others its alternatives as if they had been declared.
    origins = np.array([origin_index, *(o for o, _ in picks)], dtype=np.int64)
    seasons = np.array([season_index, *(s for _, s in picks)], dtype=np.int64)
    undated_rows = np.array([undated] + [False] * len(picks))
    # A fold whose model holds no lot of this variety (the fold took them all) cannot score the lot out of
    # sample: it takes no part (its own lots of the variety are left out of the calibration the same way).
    folds = [f for f, fold in enumerate(ref.fold_cells) if fold.evidence["variety"][variety_index] > 0]
    fold_scores = np.stack(
        [
            score_declarations(
                ref.fold_cells[f],
                z,
                variety_index,
                origins,
                seasons,
                undated_rows,
                outside_tail=options.outside_tail,
                **grid,  # type: ignore[arg-type]
            )
            for f in folds
        ]
    ).reshape(len(folds), len(origins), -1)  # (folds taking part, 1 + picks, 4)

    def p_value(kind: int, scores: np.ndarray) -> float:
        return _p(ref.calibration_scores(kind, options, stratum=stratum, variety=variety_index), scores, folds)

    declared_scores = fold_scores[:, 0]
    origin_p = p_value(ORIGIN, declared_scores[:, ORIGIN])
    season_p = None if undated else p_value(SEASON, declared_scores[:, SEASON])
    joint_p = origin_p if undated else p_value(JOINT, declared_scores[:, JOINT])
    inside_p = p_value(INSIDE, declared_scores[:, INSIDE])
    joint_calibration = ref.calibration_scores(
        ORIGIN if undated else JOINT, options, stratum=stratum, variety=variety_index
    )
    calibration_lots = sum(len(joint_calibration[f]) for f in folds)
    declared_count = (
        float(cells.cell_counts[variety_index, origin_index, season_index])
        if origin_index < n_o and season_index < n_s
        else 0.0
    )
    if declared_count < options.min_cell_lots:
        low_confidence = True
    thin_reference = low_confidence
    if not measured:
        # Still calibrated (among unmeasured lots), but with little power: on the simulated world such lots'
        # false claims were told from genuine ones hardly better than chance (docs/scoring.md).
        low_confidence = True
        warnings.append(UNMEASURED_WARNING)
    labels_o = [*ref.origins, origin_unit] if extra_origin is not None else list(ref.origins)
    labels_s = [*ref.seasons, season] if extra_season else list(ref.seasons)
    alternatives = tuple(
        Alternative(
            origin_unit=labels_o[o],
            season=labels_s[s],
            probability=_clip(float(cell_posterior[o, s])),
            p_value=p_value(JOINT, fold_scores[:, j + 1, JOINT]),
        )
        for j, (o, s) in enumerate(picks)
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
        units,
        labels_o,
        labels_s,
    )
    nearest = nearest_reference_lots(ref, variety_index, z[0], n_nearest)
    variety_z = ref.variety_space.transform(raw[None, :])
    variety_p, variety_lots, variety_alternatives = _variety_check(
        ref,
        variety_z,
        variety_index,
        options,
        stratum,
        origin=origin_index,
        # An undated lot scored against dated references is read at no season (the seasons' effects average 0).
        season=season_index if not undated or None in ref.seasons else -1,
    )
    checks_p = None
    if variety_p is not None and calibration_lots:
        smallest = ref.smallest_check_p(ORIGIN if undated else JOINT, options, stratum=stratum, variety=variety_index)
        if len(smallest):
            checks_p = _smallest_p(smallest, min(joint_p, variety_p))
    foreign = _foreign_kernels(ref, variety_index, units)
    if unit_vectors is None and ref.unit_densities is not None:
        warnings.append(PURITY_NEEDS_UNITS)
    return ClaimScore(
        plausibility=joint_p,
        origin_plausibility=origin_p,
        season_plausibility=season_p,
        nonconformity=float(np.median(declared_scores[:, JOINT])),
        declared_variety=variety,
        declared_origin=origin_unit,
        declared_season=season,
        declared_probability=_clip(declared_probability),
        alternatives=alternatives,
        outside_reference_p=inside_p,
        admixture=admixture,
        admixture_source=source,
        variety_plausibility=variety_p,
        variety_calibration_lots=variety_lots,
        variety_alternatives=variety_alternatives,
        checks_plausibility=checks_p,
        foreign_kernels=foreign,
        nearest_reference_lots=nearest,
        calibration_lots=calibration_lots,
        min_reachable_p=1.0 / (calibration_lots + 1.0),
        low_confidence=low_confidence,
        thin_reference=thin_reference,
        measured=measured,
        warnings=tuple(warnings),
    )


def _variety_check(
    ref: SpeciesReference,
    z: np.ndarray,
    declared: int,
    options: ModelOptions,
    stratum: int,
    *,
    origin: int,
    season: int,
) -> tuple[float | None, int, tuple[VarietyAlternative, ...]]:
    """The declared variety's p-value, its calibration lots, and the other varieties (posterior, p-value), from
    the lot's coordinates z (1, kv) in the variety space, read at the declared origin and season (indices; one
    the reference has not seen takes no effect)."""
    if ref.variety_model is None:
        return None, 0, ()
    n_v = len(ref.varieties)
    every = np.arange(n_v)
    where = (np.array([origin]), np.array([season]))
    # Each variety's score under each fold, as if it had been declared (row f, column v).
    fold_scores = np.stack(
        [
            variety_nonconformity(fold.densities, np.repeat(fold.at_declared(z, *where), n_v, axis=0), every)
            if fold is not None
            else np.full(n_v, np.inf)
            for fold in ref.fold_variety_models
        ]
    )
    # As for the cells: a fold holding no lot of a variety takes no part in that variety's p-value.
    takes_part = [
        [f for f, fold in enumerate(ref.fold_variety_models) if fold is not None and fold.densities.counts[v] > 0]
        for v in range(n_v)
    ]
    log_density = ref.variety_model.densities.log_densities(ref.variety_model.at_declared(z, *where))[0]
    posterior = np.exp(log_density - log_density.max())
    posterior /= posterior.sum()
    calibration = [ref.calibration_scores(VARIETY, options, stratum=stratum, variety=v) for v in range(n_v)]
    p = [_p(calibration[v], fold_scores[takes_part[v], v], takes_part[v]) for v in range(n_v)]
    others = sorted((v for v in range(n_v) if v != declared), key=lambda v: (-posterior[v], v))
    alternatives = tuple(
        VarietyAlternative(variety=ref.varieties[v], probability=_clip(float(posterior[v])), p_value=p[v])
        for v in others[:MAX_VARIETY_ALTERNATIVES]
    )
    return p[declared], sum(len(calibration[declared][f]) for f in takes_part[declared]), alternatives


def _checked_units(ref: SpeciesReference, unit_vectors: np.ndarray | None) -> np.ndarray | None:
    """The unit vectors as float64 (m, d), or a clear error for the wrong shape or non-finite values."""
    if unit_vectors is None:
        return None
    units = np.asarray(unit_vectors, dtype=np.float64)
    if units.ndim != 2 or units.shape[1] != ref.space.input_dim:
        raise ModelError(f"Unit vectors must have shape (m, {ref.space.input_dim}); got {units.shape}.")
    if not np.all(np.isfinite(units)):
        raise ClaimError("The per-photo unit vectors have NaN or infinite values; re-embed the photos.")
    return units


def _foreign_kernels(ref: SpeciesReference, declared: int, unit_vectors: np.ndarray | None) -> ShareEstimate | None:
    """Share of the lot's kernels that look like another variety than the declared one (any other, alike)."""
    densities = ref.unit_densities
    if densities is None or unit_vectors is None or len(unit_vectors) < MIN_PURITY_UNITS:
        return None
    if densities.counts[declared] <= 0:
        return None
    z = ref.space.leading(ref.unit_dim).transform(np.asarray(unit_vectors, dtype=np.float64))
    log_density = densities.log_densities(z)
    others = np.delete(log_density, declared, axis=1)
    others = others[:, np.isfinite(others).any(axis=0)]
    if not others.shape[1]:
        return None
    top = others.max(axis=1, keepdims=True)
    log_other = (top + np.log(np.exp(others - top).mean(axis=1, keepdims=True)))[:, 0]
    return mixture_share(log_density[:, declared], log_other, independent=_independent_sources(ref, unit_vectors))


def _independent_sources(ref: SpeciesReference, unit_vectors: np.ndarray) -> float | None:
    """How many photos the units came from, where their leading kernel measurements tell (every unit of a
    photo carries that photo's measurements); None (each unit counts) for vectors without measurements.

    Counting patches of one tray photo as independent kernels made the purity interval far too narrow: it
    flagged 21 % of genuine simulated lots."""
    measured = len(ref.space.measured_fill)
    if not measured:
        return None
    prefix = np.nan_to_num(np.asarray(unit_vectors, dtype=np.float64)[:, :measured], nan=np.inf)
    return float(len(np.unique(prefix, axis=0)))


#: Most other varieties a verdict lists.
MAX_VARIETY_ALTERNATIVES = 3
#: Fewest per-kernel units a purity is estimated from.
MIN_PURITY_UNITS = 4
#: Said of a lot sent without per-kernel units to a reference that could estimate purity from them.
PURITY_NEEDS_UNITS = (
    "Purity (the share of kernels of the declared variety) needs per-kernel units: send the photos, or the "
    "unit vectors `grainproof embed` writes beside its output; it was not estimated."
)


def _p(calibration: list[np.ndarray], scores: np.ndarray, folds: list[int]) -> float:
    """Conformal p-value of a claim from its scores under the fold models taking part: their mean, weighted by each
    fold's calibration lots, ranked among the calibration lots of every fold (`conformal_p_values`: interpolated
    between the neighbouring calibration scores, so an alpha between two steps of 1 / (n + 1) is not rounded down).

    Each calibration lot was scored by the one model that did not see it, so its score carries that model's own
    error; the claim's mean over the models carries less, so genuine claims rank, if anything, a little less
    nonconforming than calibration lots: the p-value errs on the conservative side. Summing the counts fold by
    fold instead (cross-conformal: each fold's own p-value, averaged) needs a claim to sit in the tail of every
    fold at once; where fold models disagree (thin cells) few genuine or false claims do: measured genuine lots on
    the simulated world were flagged 0.005 of the time at alpha 0.05, and far origins 0.51 against 0.61 now
    (docs/scoring.md, "One score per claim, ranked among every calibration lot")."""
    sizes = np.array([len(calibration[f]) for f in folds], dtype=np.float64)
    total = int(sizes.sum())
    if total == 0:
        return 1.0
    weighed = sizes > 0  # a fold without calibration lots weighs nothing, whatever its model scored
    score = float(np.dot(sizes[weighed], np.asarray(scores, dtype=np.float64).reshape(-1)[weighed]) / total)
    return float(conformal_p_values([calibration[f] for f in folds], score)[0])


def _smallest_p(calibration_sorted: np.ndarray, smallest: float) -> float:
    """Conformal p-value whose statistic is the smallest check p-value (small counts as nonconforming), ranked
    among the calibration lots' own smallest p-values (ascending) the same way as every other p-value."""
    return float(conformal_p_values([-calibration_sorted[::-1]], -smallest)[0])


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _admixture(
    ref: SpeciesReference,
    cells: CellModel,
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
) -> tuple[ShareEstimate | None, tuple[str, int | None] | None]:
    """Share of the lot's units better explained by another origin, with its interval: a two-component
    mixture along the segment from the declared cell's mean to the other origin's cell that explains the
    lot best. None without units that resolve the two ends: a lot vector alone cannot tell a blend of two
    origins from a lot of an origin in between.
    """
    if unit_vectors is None:
        return None, None
    units = unit_vectors
    others = np.array([o != origin_index for o in range(shape[0])])
    if len(units) < MIN_ADMIXTURE_UNITS or not others.any():
        return None, None
    means, _ = cells.grid(variety, extra_origin_neighbours=extra_origin, extra_season=extra_season)
    whitened = means @ cells.whitener
    y0 = z @ cells.whitener
    # No declared season: the declared cell is the origin's season closest to the lot.
    s_decl = season_index if season_index is not None else int(np.argmin(((whitened[origin_index] - y0) ** 2).sum(-1)))
    centre = whitened[origin_index, s_decl]
    y = y0 - centre
    flat = (whitened[others] - centre).reshape(-1, whitened.shape[-1])
    norms = np.maximum((flat**2).sum(1), 1e-12)
    shares = np.clip(flat @ y / norms, 0.0, 1.0)
    best = int(np.argmin(((y[None, :] - shares[:, None] * flat) ** 2).sum(1)))
    other_origins = np.flatnonzero(others)
    o_best, s_best = other_origins[best // shape[1]], best % shape[1]
    # Sorted: the units' order (photo order) must not move the estimate's last digits.
    positions = np.sort((ref.space.transform(units) @ cells.whitener - centre) @ flat[best] / norms[best])
    # Units (one kernel or patch) live at another scale than lot vectors: keep only their spread around the
    # lot's own position, and trust them only when they resolve the two ends.
    positions = positions - positions.mean() + shares[best]
    if float(positions.std()) > MAX_UNIT_SPREAD:
        return None, None
    return gaussian_positions_share(positions), (labels_o[o_best], labels_s[s_best])


#: Units spread wider than this along the declared-to-other segment (its length is 1) cannot tell the two apart.
MAX_UNIT_SPREAD = 0.5
#: Fewest units an admixture share is estimated from.
MIN_ADMIXTURE_UNITS = 4


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
