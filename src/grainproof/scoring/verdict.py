"""The verdict policy: flag at alpha and explain the scores in sentences a miller or auditor can act on.

Every sentence and every headline number of a verdict comes from one reading of the scores (`read_score`),
made at the verdict's alpha: a verdict never says "plausible" when it could not have said otherwise, never
names an alternative that does not itself fit, and shows "outside every reference" and an admixture share
only when they are significant at that alpha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grainproof.domain import Alternative, Verdict
from grainproof.scoring.plausibility import ClaimScore

#: The reason given when few or no reference lots stand in the declared cell (the monitor counts these).
THIN_REFERENCE_REASON = "Few or no reference lots for the declared cell: treat this verdict as low-confidence."


def cell_label(origin: str, season: int | None) -> str:
    return origin if season is None else f"{origin} {season}"


def _p(value: float) -> str:
    return f"{value:.3g}"


#: The purity a lot of single-kernel units must show (significantly) not to be flagged: what a site whose units
#: are kernels sets as GRAINPROOF_MIN_PURITY, and the level `evaluate` measures the purity check at (the
#: service's default, 0, reports purity without flagging on it).
KERNEL_MIN_PURITY = 0.9


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreReading:
    """What a score says at one alpha: the single source of a verdict's flag, status, numbers and reasons."""

    status: str
    #: The alternative that fits better than the declaration and well enough itself (p above alpha), if any.
    better: Alternative | None
    origin_wrong: bool  # the season fits some origin, the declared origin fits in no season
    season_wrong: bool  # the origin fits some season, the declared season fits no origin
    outside: bool  # no reference cell fits the lot as well as genuine lots fit theirs
    admixture: bool  # a significant share of the lot's units look like another origin
    variety_wrong: bool  # the kernels are significantly unlike the declared variety
    impure: bool  # significantly fewer kernels of the declared variety than the required purity
    checks: tuple[str, ...]  # the checks that flagged the lot
    #: Checks whose own p-value is at or below alpha but that do not flag: with two checks run, genuine lots show
    #: a smallest p-value that low more often than alpha (the score's checks_plausibility is above alpha).
    held_back: tuple[str, ...] = ()


def read_score(score: ClaimScore, alpha: float, min_purity: float = KERNEL_MIN_PURITY) -> ScoreReading:
    """The reading of a score at `alpha` that the flag, the reasons and the shown numbers all follow.

    Three checks can flag a lot: its origin and season, its variety, and its purity (the share of kernels of the
    declared variety, flagged when its interval lies wholly below `min_purity`). The first two flag when their
    p-value is at or below alpha and, when both ran, the smaller of the two is as rare as alpha among genuine
    lots (`checks_plausibility`): so together they flag genuine lots at alpha, not up to twice alpha.
    """
    origin_low = score.calibration_lots > 0 and score.plausibility <= alpha
    variety_low = score.variety_plausibility is not None and score.variety_plausibility <= alpha
    together = score.checks_plausibility is None or score.checks_plausibility <= alpha
    origin_flagged = origin_low and together
    variety_wrong = variety_low and together
    held_back = tuple(
        name for name, low in (("origin_season", origin_low), ("variety", variety_low)) if low and not together
    )
    foreign = score.foreign_kernels
    impure = foreign is not None and 1.0 - foreign.low < min_purity
    checks = tuple(
        name for name, hit in (("origin_season", origin_flagged), ("variety", variety_wrong), ("purity", impure)) if hit
    )
    if checks:
        status = "flagged"
    elif score.calibration_lots == 0:
        status = "uncalibrated"
    elif score.min_reachable_p > alpha:
        status = "cannot_flag"
    else:
        status = "plausible"
    flagged = origin_flagged
    fitting = [a for a in score.alternatives if a.p_value > max(alpha, score.plausibility)]
    better = max(fitting, key=lambda a: a.p_value) if flagged and fitting else None
    season_p = score.season_plausibility
    return ScoreReading(
        status=status,
        better=better,
        origin_wrong=flagged and season_p is not None and score.origin_plausibility <= alpha < season_p,
        season_wrong=flagged and season_p is not None and season_p <= alpha < score.origin_plausibility,
        # "Outside every reference" is only said of a flagged lot no alternative explains.
        outside=flagged and better is None and score.outside_reference_p <= alpha,
        admixture=score.admixture is not None
        and score.admixture_source is not None
        and score.admixture.significant(alpha)
        and status in ("flagged", "plausible"),
        variety_wrong=variety_wrong,
        impure=impure,
        checks=checks,
        held_back=held_back,
    )


def reasons_for(
    score: ClaimScore, alpha: float, reading: ScoreReading, min_purity: float = KERNEL_MIN_PURITY
) -> tuple[str, ...]:
    """Sentences explaining the verdict: what was declared, what fits better, which part looks wrong."""
    declared = cell_label(score.declared_origin, score.declared_season)
    reasons: list[str] = []
    if reading.status == "uncalibrated":
        reasons.append(
            f"Declared {declared} cannot be judged: no genuine reference lot of this variety could calibrate it. "
            "Rebuild the reference with more lots of the variety."
        )
    elif reading.status == "cannot_flag":
        reasons.append(
            f"Declared {declared} cannot be flagged at alpha={alpha:g}: only {score.calibration_lots} reference "
            f"lots calibrate this variety, so no p-value can fall below {_p(score.min_reachable_p)} "
            f"(p={_p(score.plausibility)}). Add reference lots of the variety before trusting this verdict."
        )
    elif reading.status == "plausible" and reading.held_back:
        held_back = _held_back_reason(score, alpha, reading.held_back)
        reasons.append(f"Declared {declared} is not flagged at alpha={alpha:g}. {held_back}")
    elif reading.status == "plausible":
        reasons.append(f"Declared {declared} is plausible (p={_p(score.plausibility)}, above alpha={alpha:g}).")
    elif "origin_season" in reading.held_back:
        reasons.append(f"Declared {declared}: {_held_back_reason(score, alpha, reading.held_back)} But:")
    elif "origin_season" not in reading.checks:
        reasons.append(
            f"Declared {declared} fits its origin and season (p={_p(score.plausibility)}, above alpha={alpha:g}), but:"
        )
    elif reading.better is not None:
        better = reading.better
        reasons.append(
            f"Declared {declared}; the photos fit {cell_label(better.origin_unit, better.season)} "
            f"(p={_p(better.p_value)}) far better than {declared} (p={_p(score.plausibility)})."
        )
    elif reading.outside:
        reasons.append(
            f"Declared {declared}; the photos are unusual for it (p={_p(score.plausibility)}) and fit no reference "
            f"origin as well as genuine lots fit theirs (p={_p(score.outside_reference_p)}): the lot may come from "
            "an origin missing from the reference."
        )
    else:
        reasons.append(
            f"Declared {declared}; the photos are unusual for it (p={_p(score.plausibility)}, at or below "
            f"alpha={alpha:g}) and no other reference cell fits them well enough to name."
        )
    if reading.season_wrong:
        reasons.append(
            f"The origin fits some season (p={_p(score.origin_plausibility)}) but the declared season "
            f"{score.declared_season} does not fit any origin (p={_p(score.season_plausibility or 0.0)}): "
            "check the harvest date."
        )
    if reading.origin_wrong:
        reasons.append(
            f"The season fits (p={_p(score.season_plausibility or 0.0)}) but {score.declared_origin} does not fit "
            f"in any season (p={_p(score.origin_plausibility)}): check the declared origin."
        )
    if reading.admixture and score.admixture is not None and score.admixture_source is not None:
        share = score.admixture
        reasons.append(
            f"About {share.share:.0%} ({share.low:.0%}–{share.high:.0%}) of the lot's kernels look like "
            f"{cell_label(*score.admixture_source)} rather than the declared origin (possible admixture, "
            f"p={_p(share.p_value)})."
        )
    if reading.variety_wrong and score.variety_plausibility is not None:
        likeliest = score.variety_alternatives[0] if score.variety_alternatives else None
        like = (
            f"look like {likeliest.variety} (p={_p(likeliest.p_value)}), not {score.declared_variety} as declared"
            if likeliest is not None and likeliest.p_value > alpha
            else f"do not look like {score.declared_variety} as declared"
        )
        # The varieties are compared at the declared origin and season (reference.varieties.VarietyModel).
        where = cell_label(score.declared_origin, score.declared_season)
        declared_what = "origin" if score.declared_season is None else "origin and season"
        reasons.append(
            f"Compared at the declared {declared_what} ({where}), the kernels {like} "
            f"(p={_p(score.variety_plausibility)})."
        )
        if "origin_season" in reading.checks:
            reasons.append(
                f"The variety is judged at the declared {declared_what}, which the origin check doubts too: a "
                f"false origin alone can make a true {score.declared_variety} look unlike itself."
            )
    if reading.impure and score.foreign_kernels is not None:
        foreign = score.foreign_kernels
        reasons.append(
            f"About {foreign.share:.0%} ({foreign.low:.0%}–{foreign.high:.0%}) of the kernels look like another "
            f"variety than {score.declared_variety}: the lot's purity is below the required {min_purity:.0%}."
        )
    if not score.measured:
        reasons.append(
            "The kernels in the photos could not be measured, so this verdict rests on image features alone: treat "
            "it as low-confidence and photograph the sample again on a plain tray."
        )
    if score.thin_reference:
        reasons.append(THIN_REFERENCE_REASON)
    return tuple(reasons)


def _held_back_reason(score: ClaimScore, alpha: float, held_back: Sequence[str]) -> str:
    """Why a check whose own p-value is at or below alpha did not flag the lot."""
    named = {
        "origin_season": f"its origin and season (p={_p(score.plausibility)})",
        "variety": f"its variety {score.declared_variety} (p={_p(score.variety_plausibility or 0.0)})",
    }
    return (
        f"The check of {' and of '.join(named[c] for c in held_back)} is at or below alpha={alpha:g} on its own "
        f"but does not flag: two checks ran (origin and season, variety), and genuine reference lots show a "
        f"smallest p-value this low more often than alpha (p={_p(score.checks_plausibility or 1.0)} across the "
        "checks)."
    )


def make_verdict(
    score: ClaimScore,
    *,
    lot_id: str,
    alpha: float,
    model_version: str,
    alpha_source: str = "server",
    min_purity: float = KERNEL_MIN_PURITY,
    warnings: Sequence[str] = (),
) -> Verdict:
    """The Verdict for a scored claim: flagged when a check (origin and season, variety, purity) flags it."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must lie strictly between 0 and 1")
    reading = read_score(score, alpha, min_purity)
    foreign = score.foreign_kernels
    admixture = score.admixture if reading.admixture else None
    return Verdict(
        lot_id=lot_id,
        plausibility=score.plausibility,
        origin_plausibility=score.origin_plausibility,
        season_plausibility=score.season_plausibility,
        flagged=reading.status == "flagged",
        status=reading.status,
        alpha=alpha,
        alpha_source=alpha_source,
        min_reachable_p=score.min_reachable_p,
        calibration_lots=score.calibration_lots,
        reasons=reasons_for(score, alpha, reading, min_purity),
        alternatives=score.alternatives,
        outside_reference_p_value=score.outside_reference_p,
        outside_reference=reading.outside,
        admixture=admixture.share if admixture is not None else None,
        admixture_interval=(admixture.low, admixture.high) if admixture is not None else None,
        admixture_source=cell_label(*score.admixture_source)
        if admixture is not None and score.admixture_source
        else None,
        variety_plausibility=score.variety_plausibility,
        variety_alternatives=score.variety_alternatives,
        checks_plausibility=score.checks_plausibility,
        purity=1.0 - foreign.share if foreign is not None else None,
        purity_interval=(1.0 - foreign.high, 1.0 - foreign.low) if foreign is not None else None,
        flagged_checks=reading.checks,
        nearest_reference_lots=score.nearest_reference_lots,
        declared_origin_unit=score.declared_origin,
        low_confidence=score.low_confidence or reading.status in ("cannot_flag", "uncalibrated"),
        model_version=model_version,
        warnings=tuple(dict.fromkeys([*score.warnings, *warnings])),
    )
