"""Verifying claims: the use case behind `grainproof verify` and the API's verification endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from grainproof.domain import Claim, LotRecord, Verdict
from grainproof.errors import ModelError
from grainproof.progress import ProgressCallback
from grainproof.reference import ReferenceModel
from grainproof.scoring import benjamini_hochberg
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.verdict import make_verdict
from grainproof.services.features import ensure_features
from grainproof.services.origins import claim_origin_unit, load_regions
from grainproof.settings import get_settings
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
) -> Verdict:
    """The verdict on one claim from its lot vector (d,) and optional unit vectors (m, d); a few ms.

    `nearest_lots` searches the evidence's nearest reference lots (the API passes pgvector's index on
    PostgreSQL); without it the scoring core searches them exactly in memory. `device`, the phone the
    photos were taken with, is checked against the phones of the reference lots.
    """
    if backbone_id and model.backbone_id and backbone_id != model.backbone_id:
        raise ModelError(
            f"The photos were embedded with {backbone_id} but the reference model was built with "
            f"{model.backbone_id}; embed them with the model's backbone or use a matching model."
        )
    alpha = get_settings().alpha if alpha is None else alpha
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
        f"No reference lot was photographed with this phone ({device}), so its quirks are not in the "
        "calibration: a phone unlike every reference phone can raise false alarms. Photograph a few reference "
        "lots with it and refresh the reference."
    ]


def verify_lots(
    model: ReferenceModel,
    lots: Sequence[LotRecord],
    *,
    alpha: float | None = None,
    base_dir: Path | None = None,
    embedder: Any = None,
    progress: ProgressCallback | None = None,
) -> list[Verdict]:
    """Verdicts for a batch of lots, in order; photos are embedded first where lots have no features."""
    lots, units, photo_warnings, embedded_backbone = ensure_features(
        lots, base_dir=base_dir, embedder=embedder, progress=progress
    )
    verdicts = []
    for i, lot in enumerate(lots):
        verdicts.append(
            verify_vectors(
                model,
                lot.claim,
                np.asarray(lot.features, dtype=np.float64),
                units.get(lot.lot_id),
                alpha=alpha,
                backbone_id=embedded_backbone if lot.lot_id in units else lot.extra.get("backbone") or None,
                warnings=photo_warnings.get(lot.lot_id, ()),
                device=lot.device,
            )
        )
        if progress is not None and not units:
            progress(i + 1, len(lots))
    return verdicts


def batch_flags(verdicts: Sequence[Verdict], fdr: float) -> list[bool]:
    """Benjamini-Hochberg flags for a day's batch: expected share of false flags among flagged lots <= fdr."""
    return [bool(x) for x in benjamini_hochberg([v.plausibility for v in verdicts], fdr)]
