"""The evaluation harness's pure parts: false claims derived from the truth, and the metrics.

A false claim is a genuine lot's vector with a wrong declaration: a neighbouring origin, a far
origin, another season, another variety of its species; or a lot from an origin kept out of the
reference declared as the nearest referenced one; or an admixed lot declared as its main origin, or
a lot cut with another variety declared as its main variety.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Far-origin claims name a referenced origin at least this far (km) from the true one, where one exists.
FAR_KM = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalClaim:
    """One scored declaration: which lot's vector, what is declared, and what kind of claim it is."""

    row: int
    kind: str
    species: str
    variety: str
    origin: str
    season: int | None


def haversine_km(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(a, dtype=float)) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return np.asarray(2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def origin_distances(centres: Mapping[str, tuple[float, float]]) -> tuple[list[str], np.ndarray]:
    """Origin codes and their pairwise centre distances in km."""
    codes = sorted(centres)
    lon = np.array([centres[c][0] for c in codes])
    lat = np.array([centres[c][1] for c in codes])
    return codes, haversine_km(lon[:, None], lat[:, None], lon[None, :], lat[None, :])


def neighbour_of(
    origin: str,
    candidates: Sequence[str],
    codes: Sequence[str],
    distances: np.ndarray,
    adjacency: Mapping[str, Sequence[str]] | None,
    rng: np.random.Generator,
) -> str | None:
    """A referenced neighbour of an origin: a bordering region when adjacency is known, else the nearest one."""
    pool = [c for c in candidates if c != origin]
    if not pool:
        return None
    if adjacency is not None:
        bordering = sorted(set(adjacency.get(origin, ())) & set(pool))
        if bordering:
            return str(bordering[int(rng.integers(len(bordering)))])
    if origin not in codes:
        return str(pool[int(rng.integers(len(pool)))])
    row = distances[list(codes).index(origin)]
    return min(pool, key=lambda c: (row[list(codes).index(c)] if c in codes else np.inf, c))


def far_from(
    origin: str, candidates: Sequence[str], codes: Sequence[str], distances: np.ndarray, rng: np.random.Generator
) -> str | None:
    """A referenced origin at least FAR_KM away (else among the farthest quarter), chosen at random."""
    pool = [c for c in candidates if c != origin and c in codes]
    if not pool or origin not in codes:
        return None
    row = distances[list(codes).index(origin)]
    far = [c for c in pool if row[list(codes).index(c)] >= FAR_KM]
    if not far:
        ranked = sorted(pool, key=lambda c: -row[list(codes).index(c)])
        far = ranked[: max(1, len(ranked) // 4)]
    return str(far[int(rng.integers(len(far)))])


def auroc(genuine_scores: np.ndarray, false_scores: np.ndarray) -> float:
    """Probability that a false claim is more suspicious than a genuine one (ties count half)."""
    g = np.asarray(genuine_scores, dtype=float)
    f = np.asarray(false_scores, dtype=float)
    if not len(g) or not len(f):
        return float("nan")
    from scipy.stats import rankdata

    # Mann-Whitney U from average ranks (ties count half); infinite scores rank last, as they should.
    ranks = rankdata(np.concatenate([g, f]))
    rank_sum = ranks[len(g) :].sum()
    return float((rank_sum - len(f) * (len(f) + 1) / 2.0) / (len(f) * len(g)))


@dataclass(frozen=True, slots=True, kw_only=True)
class KindResult:
    n: int
    auroc: float
    detection: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodResult:
    """A method's false-alarm rate on genuine claims and AUROC / detection per fraud kind."""

    method: str
    n_genuine: int
    false_alarm: float
    kinds: dict[str, KindResult]
    #: Share of claims of each kind ("genuine": the false-alarm rate) flagged at each level of CURVE_ALPHAS, for
    #: a method whose scores are p-values; empty for a flag rule that is not one (the purity check, the verdict).
    curves: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "n_genuine": self.n_genuine,
            "false_alarm": self.false_alarm,
            "kinds": {k: {"n": r.n, "auroc": r.auroc, "detection": r.detection} for k, r in self.kinds.items()},
            "curves": {"alpha": list(CURVE_ALPHAS), **{k: list(v) for k, v in self.curves.items()}}
            if self.curves
            else {},
        }


#: The levels `evaluate` also reports every p-value method's false-alarm and detection rates at, so a realised
#: rate can be read against its alpha over the whole range (`grainproof evaluate --plot`).
CURVE_ALPHAS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def rate_curves(kinds: Sequence[str], p_values: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Per kind, the share of its claims with p <= alpha at each level of CURVE_ALPHAS."""
    kinds_arr = np.asarray(kinds)
    p = np.asarray(p_values, dtype=float)
    levels = np.asarray(CURVE_ALPHAS)
    return {
        str(kind): tuple(float(v) for v in (p[kinds_arr == kind][:, None] <= levels[None, :]).mean(axis=0))
        for kind in sorted(set(kinds_arr.tolist()))
    }


def summarise(
    method: str, kinds: Sequence[str], p_values: np.ndarray, alpha: float, *, flagged: np.ndarray | None = None
) -> MethodResult:
    """Metrics from one p-value per claim (lower = more suspicious) and each claim's kind.

    Claims are flagged at p <= alpha, unless `flagged` says which were (a rule that is not a p-value at alpha,
    such as purity below its required level); the p-values (any score, lower = more suspicious) still rank
    the claims for the AUROC.
    """
    kinds_arr = np.asarray(kinds)
    p = np.asarray(p_values, dtype=float)
    hit = p <= alpha if flagged is None else np.asarray(flagged, dtype=bool)
    is_genuine = kinds_arr == "genuine"
    genuine = p[is_genuine]
    results = {}
    for kind in sorted(set(kinds_arr) - {"genuine"}):
        rows = kinds_arr == kind
        results[kind] = KindResult(
            n=int(rows.sum()), auroc=auroc(-genuine, -p[rows]), detection=float(np.mean(hit[rows]))
        )
    return MethodResult(
        method=method,
        n_genuine=len(genuine),
        false_alarm=float(np.mean(hit[is_genuine])) if len(genuine) else float("nan"),
        kinds=results,
        curves=rate_curves(kinds, p) if flagged is None else {},
    )
