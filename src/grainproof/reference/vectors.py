"""Reference lots as arrays: per-lot labels, and their vectors read in chunks, never all at once.

A million reference lots of 1280 features are 5 GB in float32: the builder only ever asks a
`VectorSource` for the rows it needs (a sample to fit the reduced space, then one chunk at a time
to project), so memory is bounded by the chunk size and the reduced coordinates, not by the archive.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from grainproof.domain import LotRecord
from grainproof.errors import ClaimError, ModelError

#: Season code of lots without a harvest date (sorts after every real season).
UNDATED = np.iinfo(np.int64).max
#: Rows read and projected at a time.
CHUNK_ROWS = 8192


class VectorSource(Protocol):
    """Raw lot vectors (n, d) that can be read by sorted row positions."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float64 (len(rows), d) of the given ascending row positions."""
        ...


@dataclass(frozen=True, slots=True)
class InMemoryVectors:
    """Vectors already in memory (a numpy array)."""

    array: np.ndarray

    def __post_init__(self) -> None:
        if self.array.ndim != 2:
            raise ModelError("Reference vectors must be a 2-d array (lots x features).")

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[rows], dtype=np.float64)


class NpyVectors:
    """Vectors in a `.npy` file, read with plain file reads (no memory map, so resident memory stays small)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(handle)
                self._offset = handle.tell()
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self.path} is not a readable .npy vector file ({exc}).") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ModelError(f"{self.path} must hold a C-ordered 2-d numeric array (lots x features).")
        self._shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self._dtype = np.dtype(dtype)

    @property
    def dim(self) -> int:
        return self._shape[1]

    def __len__(self) -> int:
        return self._shape[0]

    def __reduce__(self) -> tuple[type[NpyVectors], tuple[str]]:
        # Workers (Ray) reopen the file by path instead of receiving its contents.
        return (NpyVectors, (str(self.path),))

    def take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float64)
        if not len(rows):
            return out
        row_bytes = self.dim * self._dtype.itemsize
        with open(self.path, "rb", buffering=0) as handle:
            done = 0
            # Read span blocks of CHUNK_ROWS rows that contain wanted rows; a dense request is one read.
            while done < len(rows):
                first = int(rows[done])
                stop = int(np.searchsorted(rows, first + CHUNK_ROWS, side="left"))
                last = int(rows[stop - 1])
                handle.seek(self._offset + first * row_bytes)
                block = np.frombuffer(_read_exact(handle, (last - first + 1) * row_bytes), dtype=self._dtype)
                block = block.reshape(-1, self.dim)
                out[done:stop] = block[rows[done:stop] - first]
                done = stop
        return out


def _read_exact(handle: io.RawIOBase, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        part = handle.read(size - len(data))
        if not part:
            raise ModelError("The vector file ended early; it is truncated, rewrite it.")
        data += part
    return bytes(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceTable:
    """Labels of reference lots, one row per lot, aligned with a VectorSource."""

    lot_ids: np.ndarray  # (n,) str
    species: np.ndarray  # (n,) str
    varieties: np.ndarray  # (n,) str
    origins: np.ndarray  # (n,) str: origin unit (region code)
    seasons: np.ndarray  # (n,) int64, UNDATED without a harvest date
    groups: np.ndarray  # (n,) str: unit of the cross-conformal folds (field, else lot)
    devices: np.ndarray  # (n,) str, "" when unknown

    def __post_init__(self) -> None:
        n = len(self.lot_ids)
        for name in ("species", "varieties", "origins", "seasons", "groups", "devices"):
            if len(getattr(self, name)) != n:
                raise ModelError(f"Reference table column {name} has {len(getattr(self, name))} rows, not {n}.")

    def __len__(self) -> int:
        return len(self.lot_ids)

    @classmethod
    def from_columns(
        cls,
        *,
        lot_ids: Sequence[str],
        species: Sequence[str],
        varieties: Sequence[str],
        origins: Sequence[str],
        seasons: Sequence[int | None],
        groups: Sequence[str] | None = None,
        devices: Sequence[str] | None = None,
    ) -> ReferenceTable:
        return cls(
            lot_ids=np.asarray(lot_ids, dtype=str),
            species=np.asarray(species, dtype=str),
            varieties=np.asarray(varieties, dtype=str),
            origins=np.asarray(origins, dtype=str),
            seasons=np.asarray([UNDATED if s is None else int(s) for s in seasons], dtype=np.int64),
            groups=np.asarray(groups if groups is not None else lot_ids, dtype=str),
            devices=np.asarray(devices if devices is not None else [""] * len(lot_ids), dtype=str),
        )


def season_value(code: int) -> int | None:
    """The season of a season code (None for undated lots)."""
    return None if int(code) == UNDATED else int(code)


def checked_origin_units(lots: Sequence[LotRecord], origin_units: Sequence[str] | None) -> list[str]:
    """Each lot's origin unit (its region code unless given), after checking every lot has one feature
    vector of a common length; ClaimError naming the lots otherwise."""
    missing = [lot.lot_id for lot in lots if lot.features is None]
    if missing:
        raise ClaimError(f"Lot(s) {', '.join(missing[:5])} have no feature vector; embed their photos first.")
    dims = {len(lot.features or ()) for lot in lots}
    if len(dims) != 1:
        raise ClaimError(f"Feature vectors have different lengths {sorted(dims)}; embed every lot with one backbone.")
    if origin_units is None:
        no_region = [lot.lot_id for lot in lots if not lot.claim.origin.region]
        if no_region:
            raise ClaimError(
                f"Lot(s) {', '.join(no_region[:5])} have no region code; give one or build with a region set."
            )
        origin_units = [str(lot.claim.origin.region) for lot in lots]
    return list(origin_units)


def table_and_vectors(
    lots: Sequence[LotRecord], origin_units: Sequence[str] | None, groups: Sequence[str] | None
) -> tuple[ReferenceTable, InMemoryVectors]:
    """The array form of manifest lots (ClaimError when features or region codes are missing)."""
    origin_units = checked_origin_units(lots, origin_units)
    table = ReferenceTable.from_columns(
        lot_ids=[lot.lot_id for lot in lots],
        species=[lot.claim.species for lot in lots],
        varieties=[lot.claim.variety for lot in lots],
        origins=list(origin_units),
        seasons=[lot.claim.season for lot in lots],
        groups=list(groups) if groups is not None else fold_groups(lots),
        devices=[lot.device or "" for lot in lots],
    )
    return table, InMemoryVectors(np.asarray([lot.features for lot in lots], dtype=np.float64))


def fold_of_groups(groups: np.ndarray, folds: int) -> np.ndarray:
    """Cross-conformal fold of each lot from a hash of its group: independent of input order."""
    out = np.empty(len(groups), dtype=np.int64)
    cache: dict[str, int] = {}
    for i, group in enumerate(groups.tolist()):
        fold = cache.get(group)
        if fold is None:
            fold = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") % folds
            cache[group] = fold
        out[i] = fold
    return out


#: With at least this many phones among the reference lots, calibration folds hold out whole phones.
MIN_PHONES_FOR_PHONE_FOLDS = 5


def fold_groups(lots: Sequence[LotRecord]) -> list[str]:
    """The unit each lot's cross-conformal fold is drawn by: its phone, else its field, else itself.

    Holding out whole phones makes calibration lots look to their fold's model as a new phone's lots
    look to the full model, so the false-alarm rate stays honest for phones the reference never saw.
    Without enough phones, whole fields are held out so a field's lots never calibrate each other.
    The choice is made per species: a species photographed with one or two phones would otherwise put
    all its lots in one fold, leaving nothing to calibrate them with.
    """
    phones: dict[str, set[str]] = {}
    for lot in lots:
        if lot.device:
            phones.setdefault(lot.claim.species, set()).add(lot.device)
    by_phone = {species for species, seen in phones.items() if len(seen) >= MIN_PHONES_FOR_PHONE_FOLDS}
    return [
        f"phone:{lot.device}"
        if lot.device and lot.claim.species in by_phone
        else f"field:{lot.extra.get('field_id') or lot.lot_id}"
        for lot in lots
    ]
