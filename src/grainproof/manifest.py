"""The lot manifest: the one CSV format every command reads and writes (see docs/manifest.md).

One row per lot: lot_id, species, variety, lon, lat, region, origin_geojson, harvest_date,
device, and either `photos` (paths relative to the CSV, `;`-separated) or feature columns
f_0 ... f_{d-1}. The reader checks every row and reports every problem of every row, each with
its line number, at once, so a user fixes a file in one pass.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import numpy as np

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.errors import ClaimError, GrainproofError, ManifestError

REQUIRED_COLUMNS: tuple[str, ...] = ("lot_id", "species", "variety")
STANDARD_COLUMNS: tuple[str, ...] = (
    "lot_id",
    "species",
    "variety",
    "lon",
    "lat",
    "region",
    "origin_geojson",
    "harvest_date",
    "device",
    "photos",
)
_FEATURE_RE = re.compile(r"^f_(\d+)$")
_ISO_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def feature_columns(dim: int) -> list[str]:
    """Column names f_0 ... f_{dim-1}."""
    return [f"f_{i}" for i in range(dim)]


def _feature_dim(header: Sequence[str], path: str) -> int:
    indices = sorted(int(m.group(1)) for c in header if (m := _FEATURE_RE.match(c)))
    if indices and indices != list(range(len(indices))):
        raise ManifestError(path, [f"header: feature columns must be f_0 ... f_{len(indices) - 1} without gaps"])
    return len(indices)


def parse_harvest_date(text: str, *, today: date | None = None) -> date:
    """An ISO date (YYYY-MM-DD) that is not in the future; ClaimError otherwise."""
    if not _ISO_DATE_RE.match(text):
        raise ClaimError(f"harvest_date {text!r} is not an ISO date (YYYY-MM-DD)")
    try:
        parsed = date.fromisoformat(text)
    except ValueError as exc:
        raise ClaimError(f"harvest_date {text!r} is not a valid date ({exc})") from None
    if parsed > (today or date.today()):
        raise ClaimError(f"harvest_date {text} is in the future")
    return parsed


class RowError(ClaimError):
    """A manifest row with one or more problems; `problems` lists each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _parse_coordinate(text: str, name: str, low: float, high: float, problems: list[str]) -> float | None:
    """The coordinate, or None with a problem noted when it is not a number within [low, high]."""
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{name} {text!r} is not a number")
        return None
    if not math.isfinite(value) or not low <= value <= high:
        problems.append(f"{name} {text} is outside [{low:g}, {high:g}]")
        return None
    return value


#: Bad feature values named one by one in a row's problem; the rest are counted.
_FEATURES_NAMED = 5


def _parse_features(values: dict[str, str], dim: int, problems: list[str]) -> tuple[float, ...] | None:
    """The row's f_* values, None when the row has none, or None with a problem noted when any is bad."""
    texts = [values.get(f"f_{i}", "") for i in range(dim)]
    if not any(texts):
        return None
    bad = [f"f_{i}={t!r}" for i, t in enumerate(texts) if not _is_float(t)]
    if bad:
        more = f" and {len(bad) - _FEATURES_NAMED} more" if len(bad) > _FEATURES_NAMED else ""
        noun = "feature" if len(bad) == 1 else "features"
        verb = "is not a number" if len(bad) == 1 else "are not numbers"
        problems.append(f"{noun} {', '.join(bad[:_FEATURES_NAMED])}{more} {verb}")
        return None
    parsed = tuple(float(t) for t in texts)
    if not all(math.isfinite(v) for v in parsed):
        problems.append("feature vector has NaN or infinite values")
        return None
    return parsed


def parse_row(
    row: dict[str, str],
    *,
    base_dir: Path,
    dim: int,
    check_photos: bool = True,
    today: date | None = None,
) -> LotRecord:
    """One manifest row as a LotRecord; RowError listing every problem of the row."""
    values = {k: (v or "").strip() for k, v in row.items() if k is not None}
    problems: list[str] = [f"{name} is empty" for name in REQUIRED_COLUMNS if not values.get(name)]
    lon_text, lat_text = values.get("lon", ""), values.get("lat", "")
    lon = _parse_coordinate(lon_text, "lon", -180.0, 180.0, problems) if lon_text else None
    lat = _parse_coordinate(lat_text, "lat", -90.0, 90.0, problems) if lat_text else None
    if bool(lon_text) != bool(lat_text):
        problems.append("give both lon and lat, or neither")
    region = values.get("region") or None
    geojson = values.get("origin_geojson") or None
    if not lon_text and region is None and geojson is None:
        problems.append("no origin: give lon/lat, region or origin_geojson")
    harvest: date | None = None
    if harvest_text := values.get("harvest_date", ""):
        try:
            harvest = parse_harvest_date(harvest_text, today=today)
        except ClaimError as exc:
            problems.append(str(exc))
    photos: tuple[str, ...] = tuple(p.strip() for p in values.get("photos", "").split(";") if p.strip())
    if check_photos:
        problems.extend(
            f"photo {photo!r} does not exist (paths are relative to the CSV)"
            for photo in photos
            if not (base_dir / photo).is_file()
        )
    feature_problems: list[str] = []
    features = _parse_features(values, dim, feature_problems) if dim else None
    problems.extend(feature_problems)
    if not photos and features is None and not feature_problems:
        problems.append("no photos and no feature values: give one or the other")
    if problems:
        raise RowError(problems)
    extra = {k: v for k, v in values.items() if k not in STANDARD_COLUMNS and not _FEATURE_RE.match(k)}
    claim = Claim(
        lot_id=values["lot_id"],
        species=values["species"],
        variety=values["variety"],
        origin=Origin(lon=lon, lat=lat, region=region, geometry_geojson=geojson),
        harvest_date=harvest,
    )
    return LotRecord(claim=claim, device=values.get("device") or None, photos=photos, features=features, extra=extra)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_manifest(
    path: str | os.PathLike[str],
    *,
    check_photos: bool = True,
    today: date | None = None,
) -> list[LotRecord]:
    """Every lot in a manifest CSV; ManifestError listing each bad row by line number."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(str(path), ["file does not exist"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(str(path), ["file is not UTF-8 text; save the CSV as UTF-8"]) from None
    return parse_manifest_text(text, name=str(path), base_dir=path.parent, check_photos=check_photos, today=today)


def parse_manifest_text(
    text: str,
    *,
    name: str = "<manifest>",
    base_dir: Path | None = None,
    check_photos: bool = True,
    today: date | None = None,
) -> list[LotRecord]:
    """Parse manifest CSV text (for uploads); same checks as read_manifest."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if not header:
        raise ManifestError(name, ["file is empty: expected a header line"])
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ManifestError(name, [f"header: missing required column(s) {', '.join(missing)}"])
    has_origin = any(c in header for c in ("lon", "region", "origin_geojson"))
    if not has_origin:
        raise ManifestError(name, ["header: needs lon/lat, region or origin_geojson columns for the origin"])
    if ("lon" in header) != ("lat" in header):
        raise ManifestError(name, ["header: lon and lat columns go together"])
    dim = _feature_dim(header, name)
    if "photos" not in header and dim == 0:
        raise ManifestError(name, ["header: needs a photos column or feature columns f_0 ... f_{d-1}"])
    lots: list[LotRecord] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    base = base_dir or Path.cwd()
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                problems.append(f"line {line}: more values than header columns")
                continue
            if any(v is None for v in row.values()):
                problems.append(f"line {line}: fewer values than header columns")
                continue
            row_problems: list[str] = []
            lot_id = (row.get("lot_id") or "").strip()
            if lot_id in seen:
                row_problems.append(f"lot_id {lot_id!r} already used on line {seen[lot_id]}")
            elif lot_id:
                seen[lot_id] = line
            try:
                lot = parse_row(row, base_dir=base, dim=dim, check_photos=check_photos, today=today)
            except RowError as exc:
                row_problems.extend(exc.problems)
            except GrainproofError as exc:
                row_problems.append(str(exc))
            if row_problems:
                problems.extend(f"line {line}: {problem}" for problem in row_problems)
                continue
            lots.append(lot)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: malformed CSV ({exc})")
    if problems:
        raise ManifestError(name, problems)
    if not lots:
        raise ManifestError(name, ["no lots: the file has a header but no rows"])
    return lots


def feature_matrix(lots: Sequence[LotRecord]) -> np.ndarray:
    """The lots' feature vectors stacked as a float64 array (n, d); ManifestError if any is missing."""
    missing = [lot.lot_id for lot in lots if lot.features is None]
    if missing:
        raise ManifestError("<manifest>", [f"lot {m}: no feature values" for m in missing])
    dims = {len(lot.features or ()) for lot in lots}
    if len(dims) != 1:
        raise ManifestError("<manifest>", [f"feature vectors have different lengths {sorted(dims)}"])
    return np.asarray([lot.features for lot in lots], dtype=np.float64)


def _format_float(value: float) -> str:
    return repr(float(value))


def lot_to_row(lot: LotRecord) -> dict[str, str]:
    """A LotRecord's claim, device, photos and extra columns as manifest CSV cells (coordinates keep full
    precision); its features are written apart by `write_manifest`, a whole vector at a time."""
    claim = lot.claim
    row = {
        "lot_id": claim.lot_id,
        "species": claim.species,
        "variety": claim.variety,
        "lon": "" if claim.origin.lon is None else _format_float(claim.origin.lon),
        "lat": "" if claim.origin.lat is None else _format_float(claim.origin.lat),
        "region": claim.origin.region or "",
        "origin_geojson": claim.origin.geometry_geojson or "",
        "harvest_date": claim.harvest_date.isoformat() if claim.harvest_date else "",
        "device": lot.device or "",
        "photos": ";".join(lot.photos),
    }
    row.update(lot.extra)
    return row


def _feature_cells(lot: LotRecord, dims: int) -> list[str]:
    """A lot's features as CSV cells (shortest repr that reads back to the same float), padded to `dims`."""
    values = [] if lot.features is None else np.asarray(lot.features, dtype=np.float64).tolist()
    return [*map(repr, values), *[""] * (dims - len(values))]


def write_manifest(path: str | os.PathLike[str], lots: Iterable[LotRecord]) -> Path:
    """Write lots as a manifest CSV atomically (a crash never leaves half a file); returns the path."""
    path = Path(path)
    lots = list(lots)
    rows = [lot_to_row(lot) for lot in lots]
    dims = max((len(lot.features) for lot in lots if lot.features is not None), default=0)
    extra_cols = list(
        dict.fromkeys(k for r in rows for k in r if k not in STANDARD_COLUMNS and not _FEATURE_RE.match(k))
    )
    columns = [*STANDARD_COLUMNS, *extra_cols]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*columns, *feature_columns(dims)])
            for lot, r in zip(lots, rows, strict=True):
                writer.writerow([*(r.get(c, "") for c in columns), *_feature_cells(lot, dims)])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def units_path(manifest: Path) -> Path:
    """Where the unit vectors of an embedded manifest live: `<manifest stem>.units.npz` next to it."""
    return manifest.with_name(f"{manifest.stem}.units.npz")


def read_units(path: Path) -> dict[str, np.ndarray]:
    """The unit vectors sidecar of an embedded manifest, as float32 arrays keyed by lot_id."""
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key].astype(np.float32) for key in stored.files}


def units_beside(manifest: Path) -> dict[str, np.ndarray] | None:
    """The per-kernel unit vectors `grainproof embed` wrote beside a manifest, or None when there are none."""
    sidecar = units_path(manifest)
    return read_units(sidecar) if sidecar.is_file() else None
