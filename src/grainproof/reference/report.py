"""What a reference model can and cannot tell: calibration per variety, and the problems a build must report.

A conformal p-value ranked among n calibration lots cannot fall below 1 / (n + 1), so a variety calibrated
on 60 lots cannot be flagged at alpha 0.01 however false the declaration. Builds say so (and refuse a model
that leaves a variety with no calibration at all), and verdicts that could not have been flagged say so too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grainproof.reference.calibration import JOINT
from grainproof.reference.model import ReferenceModel
from grainproof.reference.space import MEASURED, MEASURED_WITHOUT_CARD, NETWORK_ONLY

STRATUM_NAMES = {MEASURED: "measured", MEASURED_WITHOUT_CARD: "measured without the card", NETWORK_ONLY: "unmeasured"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationRow:
    """One variety's calibration, for one kind of lot (measured kernels, or image features only)."""

    species: str
    variety: str
    lots: int  # reference lots of the variety (all kinds)
    stratum: str  # "measured", "unmeasured", or "all" when the model does not split them
    calibration_lots: int  # genuine calibration scores its claims are ranked among
    min_reachable_p: float
    pooled_with_other_varieties: bool  # too few lots of its own: ranked among other small varieties' lots


def calibration_summary(model: ReferenceModel) -> list[CalibrationRow]:
    """Per species, variety and stratum: how many calibration lots rank its claims, and the smallest p-value."""
    rows = []
    for name, ref in sorted(model.species.items()):
        partition = ref.partition(JOINT, model.options)
        lot_varieties = ref.cell_keys[ref.lot_cells, 0]
        strata = sorted(set(partition.stratum_of.values())) if partition.stratified else [MEASURED]
        for v, variety in enumerate(ref.varieties):
            for stratum in strata:
                group = partition.group_of(stratum, v)
                n = int(partition.sizes[group])
                rows.append(
                    CalibrationRow(
                        species=name,
                        variety=variety,
                        lots=int(np.sum(lot_varieties == v)),
                        stratum=STRATUM_NAMES.get(stratum, str(stratum)) if partition.stratified else "all",
                        calibration_lots=n,
                        min_reachable_p=1.0 / (n + 1.0),
                        pooled_with_other_varieties=bool(np.any(lot_varieties[partition.lot_group == group] != v)),
                    )
                )
    return rows


def uncalibrated_varieties(model: ReferenceModel) -> list[str]:
    """Sentences naming each species or variety none of whose own lots got a finite calibration score (its
    claims would be ranked among other varieties' lots only, or among none)."""
    problems = []
    for name, ref in sorted(model.species.items()):
        lot_varieties = ref.cell_keys[ref.lot_cells, 0]
        scored = np.isfinite(ref.calibration[:, JOINT])
        for v, variety in enumerate(ref.varieties):
            own = lot_varieties == v
            if own.any() and not scored[own].any():
                problems.append(
                    f"{name} variety {variety!r} ({int(own.sum())} reference lots) has no calibration scores: its "
                    "lots could not be held out and scored (too few lots, or all in one field or phone). Add "
                    "reference lots of it from several fields, or leave it out of this reference."
                )
    return problems


def build_warnings(model: ReferenceModel, alpha: float) -> list[str]:
    """What a user should know about a freshly built model before trusting its verdicts at `alpha`."""
    warnings = []
    for row in calibration_summary(model):
        kind = "" if row.stratum == "all" else f" ({row.stratum} lots)"
        if row.calibration_lots and row.min_reachable_p > alpha:
            warnings.append(
                f"{row.species} {row.variety}{kind}: only {row.calibration_lots} calibration lots, so no p-value "
                f"can fall below {row.min_reachable_p:.3g} and nothing can be flagged at alpha={alpha:g}; "
                f"add at least {int(np.ceil(1.0 / alpha)) - 1 - row.calibration_lots} reference lots."
            )
        elif row.pooled_with_other_varieties and row.calibration_lots:
            warnings.append(
                f"{row.species} {row.variety}{kind}: {row.lots} reference lots, fewer than the "
                f"{model.options.min_calibration} a variety needs to be calibrated on its own; its claims are "
                "ranked among the lots of other small varieties."
            )
    for name, ref in sorted(model.species.items()):
        if ref.dim <= 1 < ref.space.input_dim:
            warnings.append(
                f"{name}: the reduced space collapsed to {ref.dim} dimension (from {ref.space.input_dim} features, "
                f"{len(ref.lot_ids)} lots): the lots barely vary, or are duplicates; check the reference lots."
            )
    return list(dict.fromkeys(warnings))
