"""Verifying claims: the use case behind `grainproof verify` and the API's verification endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.domain import Claim, LotRecord, Verdict
from grainproof.errors import GrainproofError, ModelError, error_kind
from grainproof.progress import ProgressCallback
from grainproof.reference import ReferenceModel
from grainproof.scoring import benjamini_hochberg
from grainproof.scoring.plausibility import UNSEEN_PHONE_WARNING_START, score_claim
from grainproof.scoring.verdict import make_verdict
from grainproof.services.features import ensure_features
from grainproof.services.origins import claim_origin_unit, load_regions
from grainproof.settings import Settings, get_settings
from grainproof.store.photos import content_hash
from grainproof.store.vector_index import NearestLotIndex

#: Nearest reference lots shown with each verdict.
N_NEAREST = 5


def verify_vectors(
    model: ReferenceModel,
    claim: Claim,
    lot_vector: np.ndarray,
    unit_vectors: np.ndarray | None = None,
    *,
    alpha: float | None = None,
    backbone_id: str | None = None,
    warnings: Sequence[str] = (),
    nearest_lots: NearestLotIndex | None = None,
    device: str | None = None,
    settings: Settings | None = None,
) -> Verdict:
    """The verdict on one claim from its lot vector (d,) and optional unit vectors (m, d); a few ms.

    `alpha` None uses the service's setting (`settings.alpha`: the running service's, else GRAINPROOF_ALPHA);
    a value given here is recorded on the verdict as set for this request (alpha_source "request").

    `nearest_lots` searches the evidence's nearest reference lots (the API passes pgvector's index on
    PostgreSQL); without it the scoring core searches them exactly in memory. `device`, the phone the
    photos were taken with, is checked against the phones of the reference lots.
    """
    if backbone_id and model.backbone_id and backbone_id != model.backbone_id:
        raise ModelError(
            f"The photos were embedded with {backbone_id} but the reference model was built with "
            f"{model.backbone_id}; embed them with the model's backbone or use a matching model."
        )
    settings = settings or get_settings()
    alpha_source = "server" if alpha is None else "request"
    alpha = settings.alpha if alpha is None else alpha
    origin_unit, origin_warnings = claim_origin_unit(
        claim, load_regions(model.region_set), zone_members=model.zone_members, zone_reach_km=model.zone_reach_km
    )
    score = score_claim(
        model,
        species=claim.species,
        variety=claim.variety,
        origin_unit=origin_unit,
        season=claim.season,
        vector=np.asarray(lot_vector),
        unit_vectors=None if unit_vectors is None else np.asarray(unit_vectors),
        n_nearest=0 if nearest_lots is not None else N_NEAREST,
        device=device,
    )
    if nearest_lots is not None:
        found = nearest_lots.nearest(claim.species, claim.variety, np.asarray(lot_vector), N_NEAREST)
        score = replace(score, nearest_reference_lots=found)
    return make_verdict(
        score,
        lot_id=claim.lot_id,
        alpha=alpha,
        alpha_source=alpha_source,
        min_purity=settings.min_purity,
        model_version=model.version,
        warnings=[*origin_warnings, *warnings, *unseen_phone_warnings(model, device)],
    )


def unseen_phone_warnings(model: ReferenceModel, device: str | None) -> list[str]:
    """A warning when the photos come from a phone none of the reference lots was photographed with.

    Calibration holds whole phones out, so most new phones keep the false-alarm rate; a phone unlike all
    of them does not (on the simulated world the two coarsest, noisiest phones, both unseen, had their
    lots flagged 16-20 % of the time at alpha 0.05).
    """
    if not device or not model.phones or device in model.phones:
        return []
    return [
        f"{UNSEEN_PHONE_WARNING_START} ({device}), so its quirks are not in the "
        "calibration: a phone unlike every reference phone can raise false alarms. Photograph a few reference "
        "lots with it and refresh the reference."
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimFailure:
    """A claim of a batch that could not be verified, and why (the batch goes on without it)."""

    lot_id: str
    error: str  # the kind of problem (unknown_variety, claim, model, ...)
    detail: str  # the sentence saying what was wrong and what to do

    def as_dict(self) -> dict[str, Any]:
        return {"lot_id": self.lot_id, "status": "error", "error": self.error, "detail": self.detail}


def verify_lots(
    model: ReferenceModel,
    lots: Sequence[LotRecord],
    *,
    alpha: float | None = None,
    base_dir: Path | None = None,
    embedder: Any = None,
    progress: ProgressCallback | None = None,
    units: dict[str, np.ndarray] | None = None,
) -> list[Verdict | ClaimFailure]:
    """Verdicts for a batch of lots, in order; photos are embedded first where lots have no features.

    A claim that cannot be verified (an unknown variety, an origin outside the region set...) becomes a
    ClaimFailure in its place, so one bad row does not stop a day's batch. `units` are per-kernel unit
    vectors by lot_id (for admixture and purity) for lots that come with features.
    """
    lots, embedded_units, photo_warnings, embedded_backbone = ensure_features(
        lots, base_dir=base_dir, embedder=embedder, progress=progress
    )
    # Units of lots embedded here, else those `grainproof embed` wrote beside the manifest (`units`).
    units = {**(units or {}), **embedded_units}
    # Read once: a bad setting stops the batch with one error, not one per claim.
    settings = get_settings()
    results: list[Verdict | ClaimFailure] = []
    for i, lot in enumerate(lots):
        try:
            results.append(
                verify_vectors(
                    model,
                    lot.claim,
                    np.asarray(lot.features, dtype=np.float64),
                    units.get(lot.lot_id),
                    alpha=alpha,
                    backbone_id=embedded_backbone
                    if lot.lot_id in embedded_units
                    else lot.extra.get("backbone") or None,
                    warnings=[*photo_warnings.get(lot.lot_id, ()), *reference_overlap_warnings(model, lot, base_dir)],
                    device=lot.device,
                    settings=settings,
                )
            )
        except GrainproofError as exc:
            results.append(ClaimFailure(lot_id=lot.lot_id, error=error_kind(exc), detail=str(exc)))
        if progress is not None and not embedded_units:
            progress(i + 1, len(lots))
    return results


def reference_overlap_warnings(model: ReferenceModel, lot: LotRecord, base_dir: Path | None) -> list[str]:
    """Warnings when a claim is (or shares photos with) one of the model's own reference lots: its verdict
    would compare the lot with itself, its nearest reference lot at distance ~0."""
    warnings = []
    if model.holds_lot(lot.lot_id):
        warnings.append(
            f"Lot {lot.lot_id} is itself one of this model's reference lots, so its verdict compares it with itself; "
            "verify lots that are not in the reference (grainproof simulate writes intake.csv for that)."
        )
    if model.photo_hashes and lot.photos:
        root = base_dir or Path.cwd()
        shared = [
            photo
            for photo in lot.photos
            if (root / photo).is_file() and content_hash((root / photo).read_bytes()) in model.photo_hashes
        ]
        if shared:
            warnings.append(
                f"Photo(s) {', '.join(shared[:3])} of lot {lot.lot_id} are photos of reference lots of this model: "
                "the verdict compares the sample with itself."
            )
    return warnings


#: Why a verdict has no purity, when the reference could estimate it but the claim came without units.
PURITY_NO_UNITS = "not estimated: no per-kernel units (send photos, or the units sidecar `grainproof embed` writes)"
#: Why a verdict has no purity, when the reference model holds no kernel-level variety classes.
PURITY_NO_CLASSES = "not estimated: the reference model was built without per-kernel units of two varieties or more"


def variety_columns(verdict: Verdict, declared_variety: str, model: ReferenceModel, species: str) -> dict[str, Any]:
    """The variety and purity results of a verdict as flat columns (the CSV and --json shape of `verify`).

    The likeliest variety is the declared one unless the likeliest other variety (by posterior) fits the kernels
    better (a higher p-value), as the verdict's reasons say it; `purity_note` says why purity is missing.
    """
    top = verdict.variety_alternatives[0] if verdict.variety_alternatives else None
    declared_p = verdict.variety_plausibility
    if declared_p is None:
        likeliest, likeliest_p = None, None
    elif top is not None and top.p_value > declared_p:
        likeliest, likeliest_p = top.variety, top.p_value
    else:
        likeliest, likeliest_p = declared_variety, declared_p
    note = ""
    if verdict.purity is None:
        ref = model.species.get(species)
        note = PURITY_NO_CLASSES if ref is None or ref.unit_densities is None else PURITY_NO_UNITS
    low, high = verdict.purity_interval if verdict.purity_interval is not None else (None, None)
    return {
        "variety_plausibility": declared_p,
        "likeliest_variety": likeliest,
        "likeliest_variety_p": likeliest_p,
        "checks_plausibility": verdict.checks_plausibility,
        "purity": verdict.purity,
        "purity_low": low,
        "purity_high": high,
        "purity_note": note,
        "flagged_checks": ";".join(verdict.flagged_checks),
    }


def batch_flags(verdicts: Sequence[Verdict], fdr: float) -> list[bool]:
    """Benjamini-Hochberg flags for a day's batch: expected share of false flags among flagged lots <= fdr."""
    return [bool(x) for x in benjamini_hochberg([v.plausibility for v in verdicts], fdr)]
