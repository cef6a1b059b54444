"""The verdict policy: flag at alpha and explain the scores in sentences a miller or auditor can act on."""

from __future__ import annotations

from collections.abc import Sequence

from grainproof.domain import Verdict
from grainproof.scoring.plausibility import ClaimScore

#: Admixture share above which a flagged verdict mentions it.
ADMIXTURE_REASON_SHARE = 0.25
#: "Outside every reference" probability above which a verdict mentions a possibly missing origin.
OUTSIDE_REASON_PROBABILITY = 0.5


def cell_label(origin: str, season: int | None) -> str:
    return origin if season is None else f"{origin} {season}"


def _p(value: float) -> str:
    return f"{value:.3g}"


def reasons_for(score: ClaimScore, alpha: float, flagged: bool) -> tuple[str, ...]:
    """Sentences explaining the verdict: what was declared, what fits better, which part looks wrong."""
    declared = cell_label(score.declared_origin, score.declared_season)
    reasons: list[str] = []
    if not flagged:
        reasons.append(f"Declared {declared} is plausible (p={_p(score.plausibility)}, above alpha={alpha:g}).")
    else:
        better = max(score.alternatives, key=lambda a: a.p_value, default=None)
        if better is not None and better.p_value > score.plausibility:
            reasons.append(
                f"Declared {declared}; the photos fit {cell_label(better.origin_unit, better.season)} "
                f"(p={_p(better.p_value)}) far better than {declared} (p={_p(score.plausibility)})."
            )
        else:
            reasons.append(
                f"Declared {declared}; the photos are unusual for it (p={_p(score.plausibility)}, "
                f"at or below alpha={alpha:g}) and no other reference cell fits them better."
            )
        season_p = score.season_plausibility
        if season_p is not None:
            if season_p <= alpha < score.origin_plausibility:
                reasons.append(
                    f"The origin fits some season (p={_p(score.origin_plausibility)}) but the declared season "
                    f"{score.declared_season} does not fit any origin (p={_p(season_p)}): check the harvest date."
                )
            elif score.origin_plausibility <= alpha < season_p:
                reasons.append(
                    f"The season fits (p={_p(season_p)}) but {score.declared_origin} does not fit in any season "
                    f"(p={_p(score.origin_plausibility)}): check the declared origin."
                )
        if score.outside_reference_probability >= OUTSIDE_REASON_PROBABILITY:
            reasons.append(
                "The photos fit no reference origin well (probability outside every reference "
                f"{score.outside_reference_probability:.2f}): the lot may come from an origin missing from the "
                "reference."
            )
        if score.admixture is not None and score.admixture >= ADMIXTURE_REASON_SHARE and score.admixture_source:
            reasons.append(
                f"About {score.admixture:.0%} of the lot looks like {cell_label(*score.admixture_source)} "
                "rather than the declared origin (possible admixture)."
            )
    if not score.measured:
        reasons.append(
            "The kernels in the photos could not be measured, so this verdict rests on image features alone: treat "
            "it as low-confidence and photograph the sample again on a plain tray."
        )
    if score.thin_reference:
        reasons.append("Few or no reference lots for the declared cell: treat this verdict as low-confidence.")
    return tuple(reasons)


def make_verdict(
    score: ClaimScore,
    *,
    lot_id: str,
    alpha: float,
    model_version: str,
    warnings: Sequence[str] = (),
) -> Verdict:
    """The Verdict for a scored claim: flagged when the joint plausibility is at or below alpha."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must lie strictly between 0 and 1")
    flagged = score.plausibility <= alpha
    return Verdict(
        lot_id=lot_id,
        plausibility=score.plausibility,
        origin_plausibility=score.origin_plausibility,
        season_plausibility=score.season_plausibility,
        flagged=flagged,
        alpha=alpha,
        reasons=reasons_for(score, alpha, flagged),
        alternatives=score.alternatives,
        outside_reference_probability=score.outside_reference_probability,
        admixture=score.admixture,
        nearest_reference_lots=score.nearest_reference_lots,
        declared_origin_unit=score.declared_origin,
        low_confidence=score.low_confidence,
        model_version=model_version,
        warnings=tuple(dict.fromkeys([*score.warnings, *warnings])),
    )
