"""The lot manifest reader reports every bad row by line and round-trips what it writes."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.errors import ManifestError
from grainproof.manifest import read_manifest, write_manifest

HEADER = "lot_id,species,variety,lon,lat,region,harvest_date,photos\n"


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.jpg").write_bytes(b"x")
    path = tmp_path / "lots.csv"
    path.write_text(text)
    return path


def test_reads_a_valid_manifest_with_photos(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "L1,barley,Planet,4.03,49.25,51,2025-07-20,a.jpg\n")
    (lot,) = read_manifest(path)
    assert lot.claim.variety == "Planet"
    assert lot.claim.origin.lat == pytest.approx(49.25)
    assert lot.claim.season == 2025
    assert lot.photos == ("a.jpg",)


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path) -> None:
    text = HEADER + (
        "L1,barley,Planet,abc,49.2,51,2025-07-20,a.jpg\n"  # line 2: non-numeric lon
        "L2,barley,Planet,4.0,123,51,2025-07-20,a.jpg\n"  # line 3: latitude 123
        "L3,barley,Planet,4.0,49.0,51,20/07/2025,a.jpg\n"  # line 4: date format
        "L4,barley,Planet,4.0,49.0,51,2025-07-20,missing.jpg\n"  # line 5: missing photo
        "L5,barley,Planet,4.0,49.0,51,2999-07-20,a.jpg\n"  # line 6: future date
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(_write(tmp_path, text))
    problems = info.value.problems
    assert len(problems) == 5
    assert problems[0].startswith("line 2:") and "lon 'abc' is not a number" in problems[0]
    assert problems[1].startswith("line 3:") and "lat 123" in problems[1]
    assert problems[2].startswith("line 4:") and "not an ISO date" in problems[2]
    assert problems[3].startswith("line 5:") and "missing.jpg" in problems[3]
    assert problems[4].startswith("line 6:") and "in the future" in problems[4]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing required column"):
        read_manifest(_write(tmp_path, "lot_id,variety,region,photos\nL1,Planet,51,a.jpg\n"))


def test_duplicate_lot_ids_and_ragged_rows_are_rejected(tmp_path: Path) -> None:
    text = HEADER + "L1,barley,Planet,4,49,51,,a.jpg\nL1,barley,Planet,4,49,51,,a.jpg\nL2,barley\n"
    with pytest.raises(ManifestError) as info:
        read_manifest(_write(tmp_path, text))
    assert any("already used on line 2" in p for p in info.value.problems)
    assert any("fewer values" in p for p in info.value.problems)


def test_nan_features_are_rejected(tmp_path: Path) -> None:
    text = "lot_id,species,variety,region,f_0,f_1\nL1,barley,Planet,51,0.1,nan\n"
    with pytest.raises(ManifestError, match="NaN"):
        read_manifest(_write(tmp_path, text))


def test_feature_columns_must_not_have_gaps(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="without gaps"):
        read_manifest(_write(tmp_path, "lot_id,species,variety,region,f_0,f_2\nL1,b,P,51,0.1,0.2\n"))


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(ManifestError, match="UTF-8"):
        read_manifest(path)


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s.strip() != ""
)


@given(
    lot_id=_text,
    variety=_text,
    lon=st.floats(-180, 180, allow_nan=False),
    lat=st.floats(-90, 90, allow_nan=False),
    features=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6),
    harvest=st.dates(min_value=date(2000, 1, 1), max_value=date(2025, 12, 31)),
)
def test_written_manifests_read_back_identically(
    tmp_path_factory: pytest.TempPathFactory,
    lot_id: str,
    variety: str,
    lon: float,
    lat: float,
    features: list[float],
    harvest: date,
) -> None:
    lot = LotRecord(
        claim=Claim(
            lot_id=lot_id,
            species="barley",
            variety=variety,
            origin=Origin(lon=lon, lat=lat, region="51"),
            harvest_date=harvest,
        ),
        features=tuple(features),
    )
    path = write_manifest(tmp_path_factory.mktemp("m") / "lots.csv", [lot])
    (back,) = read_manifest(path)
    assert back == lot
