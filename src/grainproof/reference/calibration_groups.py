"""Calibration groups: which reference lots a claim's conformal p-value is ranked among.

A p-value is valid for the claims of a group when its calibration lots are exchangeable with them, so the
groups must partition the reference: every lot calibrates exactly one group, and a claim uses the group its
declaration maps to. (Ranking a small cell's claims among "the whole variety" while the variety's big cells
were calibrated on their own broke this: the pool's tight lots calibrated claims they never stood for, and
on the glass data of the provenance protocol genuine claims were flagged 8.9 % of the time at alpha 0.05.)

The groups are varieties, so the false-alarm rate holds variety by variety. Finer groups (one per cell)
would hold it cell by cell, but were measured to cost much power: a cell's few calibration lots give coarse
p-values, and the scores (reference.calibration) are already normalised by each cell's own predictive, so
cells of one variety share a scale. The partition depends on the reference alone:

1. lots are split by calibration stratum (Mondrian: lots measured with the card, without it, and lots whose
   kernels could not be measured spread differently); a stratum with fewer than `min_stratum` lots joins the
   largest one;
2. within a stratum, a variety with at least `min_lots` lots is a group of its own;
3. the other varieties of the stratum pool into its species remainder, which absorbs the smallest other
   groups until it too has `min_lots` lots (or nothing is left to absorb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationGroups:
    """A partition of calibration lots into groups, and the rule that maps a declaration to its group."""

    lot_group: np.ndarray  # (n,) int: group of each calibration lot, -1 for lots without a finite score
    stratum_of: dict[int, int]  # a lot's stratum -> the stratum it is calibrated in (small ones join the largest)
    variety_group: dict[tuple[int, int], int]  # (stratum, variety) -> group, for varieties with their own
    species_group: dict[int, int]  # stratum -> group of the species remainder
    absorbed: dict[int, int]  # group -> the species remainder it was merged into
    sizes: np.ndarray  # (groups,) calibration lots per group

    @property
    def stratified(self) -> bool:
        """Whether lots of different strata are calibrated apart."""
        return len(set(self.stratum_of.values())) > 1

    def group_of(self, stratum: int, variety: int) -> int:
        """The group a declaration of this variety, from a lot of this stratum, is ranked in."""
        s = self.stratum_of.get(int(stratum), -1)
        if s not in self.species_group:  # a stratum the reference has no lots of: pool with the largest
            s = max(self.species_group, key=lambda key: (self.sizes[self.species_group[key]], -key))
        group = self.variety_group.get((s, int(variety)), self.species_group[s])
        return self.absorbed.get(group, group)


def calibration_groups(
    strata: np.ndarray, varieties: np.ndarray, valid: np.ndarray, *, min_lots: int, min_stratum: int
) -> CalibrationGroups:
    """Partition calibration lots (their stratum and variety, and whether their score is finite)."""
    strata = np.asarray(strata, dtype=np.int64)
    varieties = np.asarray(varieties, dtype=np.int64)
    usable = np.asarray(valid, dtype=bool)
    stratum_sizes = {int(s): int(np.sum(usable & (strata == s))) for s in np.unique(strata[usable])}
    largest = max(stratum_sizes, key=lambda s: (stratum_sizes[s], -s)) if stratum_sizes else 0
    stratum_of = {s: (s if n >= min_stratum else largest) for s, n in stratum_sizes.items()}
    lot_stratum = np.array([stratum_of.get(int(s), largest) for s in strata.tolist()], dtype=np.int64)
    lot_group = np.full(len(strata), -1, dtype=np.int64)
    variety_group: dict[tuple[int, int], int] = {}
    species_group: dict[int, int] = {}
    members: list[np.ndarray] = []
    group_stratum: list[int] = []

    def new_group(rows: np.ndarray, stratum: int) -> int:
        members.append(rows)
        group_stratum.append(stratum)
        lot_group[rows] = len(members) - 1
        return len(members) - 1

    for stratum in sorted({int(s) for s in np.unique(lot_stratum[usable])} or {largest}):
        in_stratum = usable & (lot_stratum == stratum)
        remainder = np.zeros(len(strata), dtype=bool)
        for variety in np.unique(varieties[in_stratum]).tolist():
            rows = in_stratum & (varieties == variety)
            if rows.sum() >= min_lots:
                variety_group[(stratum, int(variety))] = new_group(np.flatnonzero(rows), stratum)
            else:
                remainder |= rows
        species_group[stratum] = new_group(np.flatnonzero(remainder), stratum)
    sizes = np.array([len(rows) for rows in members], dtype=np.int64)
    absorbed: dict[int, int] = {}
    for stratum, target in species_group.items():
        # A thin remainder (or an empty one, which only unseen declarations would use) takes in the smallest
        # groups of its stratum: coarse p-values for those, but every declaration ranked among enough lots.
        own = [g for g in range(len(members)) if g != target and sizes[g] and group_stratum[g] == stratum]
        for group in sorted(own, key=lambda g: (sizes[g], g)):
            if sizes[target] >= min_lots:
                break
            absorbed[group] = target
            lot_group[members[group]] = target
            sizes[target] += sizes[group]
            sizes[group] = 0
    return CalibrationGroups(
        lot_group=lot_group,
        stratum_of=stratum_of,
        variety_group=variety_group,
        species_group=species_group,
        absorbed=absorbed,
        sizes=sizes,
    )
