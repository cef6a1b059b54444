"""`grainproof evaluate`: cross-validated check of the scoring on a user's own labelled lots, beside peers.

Lots are split into folds grouped by phone (default: held-out phones are really unseen), field or
lot. For each fold a reference is built on the others; the held-out lots are scored as genuine
claims and as every kind of false claim derived from the truth (see grainproof.scoring.evaluation).
Beside the origin-and-season p-value, the variety check and (with per-kernel units) the purity check are
reported as methods of their own, and so is the verdict, which flags a lot when any of the three does.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from grainproof.domain import LotRecord
from grainproof.errors import ClaimError
from grainproof.progress import ProgressCallback
from grainproof.reference import ModelOptions, ReferenceModel, fit_reference_model
from grainproof.reference.space import NETWORK_ONLY
from grainproof.scoring.conformal import conformal_p_value
from grainproof.scoring.evaluation import (
    CURVE_ALPHAS,
    EvalClaim,
    MethodResult,
    far_from,
    neighbour_of,
    origin_distances,
    summarise,
)
from grainproof.scoring.peers import PeerScorer, default_peers
from grainproof.scoring.plausibility import ClaimScore, score_claim
from grainproof.scoring.verdict import KERNEL_MIN_PURITY, read_score
from grainproof.services.references import backbone_column, device_nuisance_factory
from grainproof.settings import get_settings

OURS = "grainproof"
#: The declared-variety check alone (its conformal p-value); 1 for a species with a single variety.
VARIETY_CHECK = "grainproof, variety check"
#: The purity check alone: flagged when the interval of the share of kernels of the declared variety lies below
#: the required purity; ranked by the interval's upper end. Only with per-kernel units.
PURITY_CHECK = "grainproof, purity check"
#: The verdict as the service gives it: flagged when a check flags the lot (origin and season and variety together
#: at alpha, `checks_plausibility`; purity only where GRAINPROOF_MIN_PURITY is set); ranked by the two together.
VERDICT = "grainproof, any check (verdict)"
ORACLE = "oracle_latent"
#: The variety check on the simulator's latent traits: what the check gives when the vectors carry the traits.
ORACLE_VARIETY = "oracle_latent, variety check"
MEASURED_LOTS = "grainproof, measured lots"
UNMEASURED_LOTS = "grainproof, unmeasured lots"
GROUP_BY = ("device", "field", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationReport:
    """Per method (ours, peers, oracle): realised false-alarm rate and per-kind AUROC and detection at alpha."""

    alpha: float
    folds: int
    group_by: str
    n_lots: int
    held_out_origins: tuple[str, ...]
    methods: tuple[MethodResult, ...]
    #: Ours again, on lots whose kernels were measured and on those whose photos gave none (a wood board, kernels
    #: touching): the second kind rests on image features alone. Empty unless the lots hold both kinds.
    ours_by_measurement: tuple[MethodResult, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "alpha": self.alpha,
            "folds": self.folds,
            "group_by": self.group_by,
            "n_lots": self.n_lots,
            "held_out_origins": list(self.held_out_origins),
            "methods": {m.method: m.as_dict() for m in self.methods},
            "ours_by_measurement": {m.method: m.as_dict() for m in self.ours_by_measurement},
        }


def _role(lot: LotRecord) -> str:
    if lot.extra.get("referenced", "").strip().lower() == "false":
        return "missing"
    if lot.extra.get("admixture_variety", "").strip():
        return "variety_admixture"
    try:
        share = float(lot.extra.get("admixture_share") or 0.0)
    except ValueError:
        share = 0.0
    return "admixture" if share > 0 else "genuine"


def _group(lot: LotRecord, group_by: str) -> str:
    if group_by == "device":
        return lot.device or "unknown-device"
    if group_by == "field":
        return lot.extra.get("field_id") or lot.lot_id
    return lot.lot_id


def _stable_fraction(key: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def evaluate_lots(
    lots: Sequence[LotRecord],
    *,
    folds: int = 5,
    alpha: float = 0.05,
    group_by: str = "device",
    seed: int = 0,
    origin_adjacency: Mapping[str, Sequence[str]] | None = None,
    latent: Mapping[str, np.ndarray] | None = None,
    with_peers: bool = True,
    options: ModelOptions | None = None,
    progress: ProgressCallback | None = None,
    units: Mapping[str, np.ndarray] | None = None,
    min_purity: float | None = None,
) -> EvaluationReport:
    """Cross-validated AUROC, detection at alpha and false-alarm rate, for ours and each peer, by fraud kind.

    `units` (lot_id -> per-kernel unit vectors, as `grainproof embed` writes beside its output) give the
    references their kernel-level variety classes and the scored lots their purity; `min_purity` is the purity
    the verdict requires (default: GRAINPROOF_MIN_PURITY, 0: reported, never flagged); the purity check's own row
    is measured at it, or at KERNEL_MIN_PURITY when it is 0.
    """
    if group_by not in GROUP_BY:
        raise ClaimError(f"--group-by {group_by!r} is not one of {', '.join(GROUP_BY)}.")
    if not 0.0 < alpha < 1.0:
        raise ClaimError(f"alpha={alpha} must lie strictly between 0 and 1.")
    if any(lot.features is None for lot in lots):
        raise ClaimError("evaluate works on feature vectors: embed the manifest first (`grainproof embed`).")
    no_region = [lot.lot_id for lot in lots if not lot.claim.origin.region]
    if no_region:
        raise ClaimError(
            f"Lot(s) {', '.join(no_region[:5])} have no region: evaluate needs the true region of each lot."
        )
    roles = [_role(lot) for lot in lots]
    held_out: set[str] = set()
    if "missing" not in roles:
        # No lots marked referenced=false: keep about a tenth of the origins out of every reference instead.
        regions = sorted({lot.claim.origin.region or "" for lot in lots})
        ranked = sorted(regions, key=lambda r: _stable_fraction(r, seed))
        held_out = set(ranked[: max(1, len(regions) // 10)]) if len(regions) >= 5 else set()
        roles = [
            "missing" if lot.claim.origin.region in held_out and r == "genuine" else r
            for lot, r in zip(lots, roles, strict=True)
        ]
    else:
        held_out = {lot.claim.origin.region or "" for lot, r in zip(lots, roles, strict=True) if r == "missing"}
    groups = sorted({_group(lot, group_by) for lot in lots})
    n_folds = min(folds, len(groups))
    if n_folds < 2:
        raise ClaimError(f"Cross-validation needs at least two {group_by} groups; the lots have {len(groups)}.")
    rng = np.random.default_rng(seed)
    shuffled = [groups[i] for i in rng.permutation(len(groups))]
    fold_of_group = {g: i % n_folds for i, g in enumerate(shuffled)}
    fold = np.array([fold_of_group[_group(lot, group_by)] for lot in lots])
    centres = _origin_centres(lots)
    codes, distances = origin_distances(centres)
    peers_p: dict[str, list[float]] = defaultdict(list)
    ours: list[ClaimScore] = []
    oracle: list[ClaimScore] = []
    kinds: list[str] = []
    options = options or ModelOptions()
    # The backbone id says how the features are laid out (kernel measurements first): the reference space
    # weighs them accordingly, as `reference build` does.
    backbone_id = backbone_column(lots)
    claim_measured: list[bool] = []
    for f in range(n_folds):
        train = [lot for lot, r, k in zip(lots, roles, fold, strict=True) if r == "genuine" and k != f]
        test_rows = [i for i in range(len(lots)) if fold[i] == f]
        model = fit_reference_model(
            train,
            origin_adjacency=origin_adjacency,
            backbone_id=backbone_id,
            nuisance_factory=device_nuisance_factory(),
            options=options,
            seed=seed,
            units=units,
        )
        claims = _claims_for(lots, roles, test_rows, model, codes, distances, origin_adjacency, rng)
        ours.extend(_score_ours(model, lots, claims, units))
        if latent is not None:
            oracle_model = fit_reference_model(
                _with_latent(train, latent), origin_adjacency=origin_adjacency, options=options, seed=seed
            )
            oracle_lots = _with_latent_all(lots, latent, {c.row for c in claims})
            oracle.extend(_score_ours(oracle_model, oracle_lots, claims))
        if with_peers:
            for name, p in _score_peers(model, train, lots, claims, seed).items():
                peers_p[name].extend(p)
        kinds.extend(c.kind for c in claims)
        # Measured or not as the reference space itself tells (one definition: calibration_strata).
        claim_measured.extend(
            bool(
                model.species[c.species].space.calibration_strata(np.asarray([lots[c.row].features]))[0] != NETWORK_ONLY
            )
            for c in claims
        )
        if progress is not None:
            progress(f + 1, n_folds)
    ours_p = [score.plausibility for score in ours]
    methods = [summarise(OURS, kinds, np.asarray(ours_p), alpha)]
    # The purity check is measured at the level a site would set when the server does not flag on it.
    verdict_purity = get_settings().min_purity if min_purity is None else min_purity
    methods += _check_methods(ours, kinds, alpha, verdict_purity or KERNEL_MIN_PURITY, verdict_purity)
    methods += [summarise(name, kinds, np.asarray(p), alpha) for name, p in peers_p.items()]
    if latent is not None:
        methods.append(summarise(ORACLE, kinds, np.array([score.plausibility for score in oracle]), alpha))
        oracle_variety = [1.0 if s.variety_plausibility is None else s.variety_plausibility for s in oracle]
        methods.append(summarise(ORACLE_VARIETY, kinds, np.array(oracle_variety), alpha))
    by_measurement: list[MethodResult] = []
    flags = np.asarray(claim_measured, dtype=bool)
    for label, rows in ((MEASURED_LOTS, flags), (UNMEASURED_LOTS, ~flags)):
        kinds_here = [k for k, keep in zip(kinds, rows, strict=True) if keep]
        if flags.all() or not flags.any() or "genuine" not in kinds_here:
            break
        by_measurement.append(summarise(label, kinds_here, np.asarray(ours_p)[rows], alpha))
    return EvaluationReport(
        alpha=alpha,
        folds=n_folds,
        group_by=group_by,
        n_lots=len(lots),
        held_out_origins=tuple(sorted(held_out)),
        methods=tuple(methods),
        ours_by_measurement=tuple(by_measurement) if len(by_measurement) == 2 else (),
    )


def _check_methods(
    scores: Sequence[ClaimScore], kinds: Sequence[str], alpha: float, purity_level: float, verdict_purity: float
) -> list[MethodResult]:
    """The variety check, the purity check at `purity_level` (when some lots had units) and the verdict as the
    service gives it (purity flagging at `verdict_purity`, never at 0), each over every claim."""
    variety_p = np.array([1.0 if s.variety_plausibility is None else s.variety_plausibility for s in scores])
    checks = [read_score(s, alpha, verdict_purity).checks for s in scores]
    methods = [summarise(VARIETY_CHECK, kinds, variety_p, alpha)]
    if any(s.foreign_kernels is not None for s in scores):
        purity_high = np.array([1.0 if s.foreign_kernels is None else 1.0 - s.foreign_kernels.low for s in scores])
        impure = np.array(["purity" in read_score(s, alpha, purity_level).checks for s in scores])
        methods.append(summarise(PURITY_CHECK, kinds, purity_high, alpha, flagged=impure))
    # Ranked by what the verdict flags on: the two checks together where both ran, else the one that did.
    together = np.array(
        [
            s.checks_plausibility if s.checks_plausibility is not None else min(s.plausibility, v)
            for s, v in zip(scores, variety_p, strict=True)
        ]
    )
    verdict = summarise(VERDICT, kinds, together, alpha, flagged=np.array([bool(c) for c in checks]))
    # The verdict's own rule read at every level, so its realised false-alarm rate can be set against alpha.
    kinds_arr = np.asarray(kinds)
    at_level = np.array(
        [[bool(read_score(s, level, verdict_purity).checks) for level in CURVE_ALPHAS] for s in scores]
    ).reshape(len(scores), len(CURVE_ALPHAS))
    curves = {str(k): tuple(float(v) for v in at_level[kinds_arr == k].mean(axis=0)) for k in sorted(set(kinds))}
    methods.append(replace(verdict, curves=curves))
    return methods


def _origin_centres(lots: Sequence[LotRecord]) -> dict[str, tuple[float, float]]:
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for lot in lots:
        origin = lot.claim.origin
        if origin.lon is not None and origin.lat is not None and origin.region:
            points[origin.region].append((origin.lon, origin.lat))
    return {r: (float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts]))) for r, pts in points.items()}


def _claims_for(
    lots: Sequence[LotRecord],
    roles: Sequence[str],
    rows: Sequence[int],
    model: ReferenceModel,
    codes: Sequence[str],
    distances: np.ndarray,
    adjacency: Mapping[str, Sequence[str]] | None,
    rng: np.random.Generator,
) -> list[EvalClaim]:
    out: list[EvalClaim] = []
    for i in rows:
        claim = lots[i].claim
        ref = model.species.get(claim.species)
        if ref is None or claim.variety not in ref.varieties:
            continue
        origin, season = claim.origin.region or "", claim.season
        base = {"row": i, "species": claim.species, "variety": claim.variety}
        if roles[i] in ("admixture", "variety_admixture"):
            out.append(EvalClaim(kind=roles[i], origin=origin, season=season, **base))  # type: ignore[arg-type]
            continue
        if roles[i] == "missing":
            declared = neighbour_of(origin, ref.origins, codes, distances, adjacency, rng)
            if declared is not None:
                out.append(EvalClaim(kind="missing_origin", origin=declared, season=season, **base))  # type: ignore[arg-type]
            continue
        out.append(EvalClaim(kind="genuine", origin=origin, season=season, **base))  # type: ignore[arg-type]
        neighbour = neighbour_of(origin, ref.origins, codes, distances, adjacency, rng)
        if neighbour is not None:
            out.append(EvalClaim(kind="neighbour_origin", origin=neighbour, season=season, **base))  # type: ignore[arg-type]
        far = far_from(origin, ref.origins, codes, distances, rng)
        if far is not None:
            out.append(EvalClaim(kind="far_origin", origin=far, season=season, **base))  # type: ignore[arg-type]
        other_seasons = [s for s in ref.seasons if s is not None and s != season]
        if season is not None and other_seasons:
            wrong = other_seasons[int(rng.integers(len(other_seasons)))]
            out.append(EvalClaim(kind="wrong_season", origin=origin, season=wrong, **base))  # type: ignore[arg-type]
        # A lot of this variety declared as another variety of its species, its origin and season true.
        other_varieties = [v for v in ref.varieties if v != claim.variety]
        if other_varieties:
            swapped = other_varieties[int(rng.integers(len(other_varieties)))]
            out.append(
                EvalClaim(
                    kind="variety_swap", row=i, species=claim.species, variety=swapped, origin=origin, season=season
                )
            )
    return out


def _score_ours(
    model: ReferenceModel,
    lots: Sequence[LotRecord],
    claims: Sequence[EvalClaim],
    units: Mapping[str, np.ndarray] | None = None,
) -> list[ClaimScore]:
    return [
        score_claim(
            model,
            species=c.species,
            variety=c.variety,
            origin_unit=c.origin,
            season=c.season,
            vector=np.asarray(lots[c.row].features, dtype=np.float64),
            n_alternatives=0,
            n_nearest=0,
            device=lots[c.row].device,
            unit_vectors=None if units is None else units.get(lots[c.row].lot_id),
        )
        for c in claims
    ]


def _cell(variety: str, origin: str, season: int | None) -> str:
    return f"{variety}|{origin}|{season}"


def _score_peers(
    model: ReferenceModel, train: Sequence[LotRecord], lots: Sequence[LotRecord], claims: Sequence[EvalClaim], seed: int
) -> dict[str, list[float]]:
    """Each peer fitted per species on 80% of the training lots, split-conformal calibrated on the rest (by field)."""
    positions = {name: np.full(len(claims), np.nan) for name in [p.name for p in default_peers(seed)]}
    for species, ref in model.species.items():
        species_train = [lot for lot in train if lot.claim.species == species]
        z = ref.space.transform(np.asarray([lot.features for lot in species_train], dtype=np.float64))
        cells = [_cell(lot.claim.variety, lot.claim.origin.region or "", lot.claim.season) for lot in species_train]
        is_cal = np.array(
            [_stable_fraction(lot.extra.get("field_id") or lot.lot_id, seed + 1) < 0.2 for lot in species_train]
        )
        rows = [j for j, c in enumerate(claims) if c.species == species]
        if not rows:
            continue
        z_test = ref.space.transform(np.asarray([lots[claims[j].row].features for j in rows], dtype=np.float64))
        test_cells = [_cell(claims[j].variety, claims[j].origin, claims[j].season) for j in rows]
        peer: PeerScorer
        for peer in default_peers(seed):
            fit_rows = np.flatnonzero(~is_cal)
            peer.fit(z[fit_rows], [cells[j] for j in fit_rows])
            cal_rows = np.flatnonzero(is_cal)
            cal = peer.nonconformity(z[cal_rows], [cells[j] for j in cal_rows])
            p = conformal_p_value(np.sort(cal), peer.nonconformity(z_test, test_cells))
            positions[peer.name][rows] = p
    return {name: [float(x) for x in values] for name, values in positions.items()}


def _with_latent(lots: Sequence[LotRecord], latent: Mapping[str, np.ndarray]) -> list[LotRecord]:
    missing = [lot.lot_id for lot in lots if lot.lot_id not in latent]
    if missing:
        raise ClaimError(f"Latent traits missing for lot(s) {', '.join(missing[:5])}.")
    return [replace(lot, features=tuple(float(x) for x in latent[lot.lot_id]), device=None) for lot in lots]


def _with_latent_all(lots: Sequence[LotRecord], latent: Mapping[str, np.ndarray], rows: set[int]) -> list[LotRecord]:
    return [
        replace(lot, features=tuple(float(x) for x in latent[lot.lot_id])) if i in rows else lot
        for i, lot in enumerate(lots)
    ]


def read_latent_traits(path: Path) -> dict[str, np.ndarray]:
    """lot_id -> latent trait vector from the simulator's latent_traits.csv (truth, for the oracle)."""
    return read_latent_table(path)[1]


def read_latent_table(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The trait column names of latent_traits.csv, and lot_id -> trait vector in that order."""
    import csv

    with open(path, encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in (reader.fieldnames or []) if c != "lot_id"]
        if "lot_id" not in (reader.fieldnames or []) or not columns:
            raise ClaimError(f"{path}: expected a lot_id column and latent trait columns.")
        out: dict[str, np.ndarray] = {}
        for line, row in enumerate(reader, start=2):
            try:
                out[row["lot_id"]] = np.array([float(row[c]) for c in columns])
            except (TypeError, ValueError):
                raise ClaimError(f"{path} line {line}: latent traits must be numbers.") from None
    return columns, out
