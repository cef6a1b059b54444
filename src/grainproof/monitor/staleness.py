"""Reference staleness per variety: how old its newest reference lots are, season by season, how many
verifications fall in thin reference cells, and whether a refresh is due.

A refresh is due for a variety when lots are declared from a harvest season its reference does not hold,
when its newest reference lot is older than `max_age_days`, or when the share of its recent verifications
in thin cells is significantly above `thin_share_limit` (the lower end of its interval above the limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from grainproof.monitor.calibration import clopper_pearson


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceLotAge:
    """One reference lot: its variety, harvest season (None: undated) and when it joined the reference."""

    species: str
    variety: str
    season: int | None
    added_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclaredLot:
    """One recent verification: its variety, declared season, and whether it fell in a thin reference cell."""

    species: str
    variety: str
    season: int | None
    thin_cell: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SeasonAge:
    season: int | None
    lots: int
    newest_added_at: datetime
    age_days: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "season": self.season,
            "lots": self.lots,
            "newest_added_at": self.newest_added_at.isoformat(),
            "age_days": round(self.age_days, 1),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class VarietyStaleness:
    species: str
    variety: str
    seasons: tuple[SeasonAge, ...]
    newest_season: int | None
    newest_declared_season: int | None
    verifications: int
    thin_cell: int
    thin_share_interval: tuple[float, float]
    refresh_due: bool
    reasons: tuple[str, ...]

    @property
    def thin_share(self) -> float | None:
        return self.thin_cell / self.verifications if self.verifications else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "species": self.species,
            "variety": self.variety,
            "seasons": [s.as_dict() for s in self.seasons],
            "newest_season": self.newest_season,
            "newest_declared_season": self.newest_declared_season,
            "verifications": self.verifications,
            "thin_cell_verifications": self.thin_cell,
            "thin_cell_share": self.thin_share,
            "thin_cell_share_interval": list(self.thin_share_interval),
            "refresh_due": self.refresh_due,
            "reasons": list(self.reasons),
        }


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def reference_staleness(
    reference: Sequence[ReferenceLotAge],
    declared: Sequence[DeclaredLot],
    *,
    now: datetime,
    max_age_days: float = 365.0,
    thin_share_limit: float = 0.2,
    level: float = 0.95,
) -> list[VarietyStaleness]:
    """One row per variety seen in the reference or the recent verifications, sorted by species and variety."""
    now = _utc(now)
    varieties = sorted({(r.species, r.variety) for r in reference} | {(d.species, d.variety) for d in declared})
    rows = []
    for species, variety in varieties:
        lots = [r for r in reference if (r.species, r.variety) == (species, variety)]
        seen = [d for d in declared if (d.species, d.variety) == (species, variety)]
        by_season: dict[int | None, list[ReferenceLotAge]] = {}
        for lot in lots:
            by_season.setdefault(lot.season, []).append(lot)
        seasons = []
        for season in sorted(by_season, key=lambda s: (s is None, s or 0), reverse=True):
            newest = max(_utc(lot.added_at) for lot in by_season[season])
            seasons.append(
                SeasonAge(
                    season=season,
                    lots=len(by_season[season]),
                    newest_added_at=newest,
                    age_days=(now - newest).total_seconds() / 86400.0,
                )
            )
        dated = [s for s in by_season if s is not None]
        newest_season = max(dated) if dated else None
        declared_seasons = [d.season for d in seen if d.season is not None]
        newest_declared = max(declared_seasons) if declared_seasons else None
        thin = sum(d.thin_cell for d in seen)
        interval = clopper_pearson(thin, len(seen), level)
        reasons = []
        if not lots:
            reasons.append(f"No reference lot of {variety} is stored: add some and rebuild the model.")
        else:
            youngest = min(s.age_days for s in seasons)
            if youngest > max_age_days:
                reasons.append(
                    f"The newest reference lot of {variety} was added {youngest:.0f} days ago "
                    f"(over {max_age_days:.0f}): add lots of the latest harvest."
                )
        if newest_declared is not None and (newest_season is None or newest_declared > newest_season):
            reasons.append(
                f"Lots of {variety} are declared from the {newest_declared} harvest, which the reference does not hold"
                + (f" (newest: {newest_season})" if newest_season is not None else "")
                + ": add reference lots of that season."
            )
        if seen and interval[0] > thin_share_limit:
            reasons.append(
                f"{thin} of {len(seen)} recent verifications of {variety} fell in thin reference cells "
                f"(significantly over {thin_share_limit:.0%}): add reference lots where they were declared."
            )
        rows.append(
            VarietyStaleness(
                species=species,
                variety=variety,
                seasons=tuple(seasons),
                newest_season=newest_season,
                newest_declared_season=newest_declared,
                verifications=len(seen),
                thin_cell=thin,
                thin_share_interval=interval,
                refresh_due=bool(reasons),
                reasons=tuple(reasons),
            )
        )
    return rows
