"""A tiny simulated world end to end: files, determinism, claims that lie the way they say, the CLI."""

from __future__ import annotations

import csv
import filecmp
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from grainproof.domain import FRAUD_KINDS
from grainproof.errors import GrainproofError
from grainproof.geo import load_region_set
from grainproof.manifest import read_manifest
from grainproof.simulate import WorldConfig, WorldSummary, simulate_world
from grainproof.simulate.traits import LATENT_TRAITS
from grainproof.simulate.varieties import varieties_of
from grainproof.simulate.world import FAR_ORIGIN_MIN_KM

CONFIG = WorldConfig(lots=30, photos_per_lot=2, seed=11, fraud_rate=0.5, max_photo_side=128)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldSummary:
    return simulate_world(CONFIG, tmp_path_factory.mktemp("world") / "w", workers=1)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_world_writes_photos_truth_claims_traits_and_parameters(world: WorldSummary) -> None:
    out = world.out_dir
    assert len(list((out / "photos").glob("*.jpg"))) == 60
    truth = read_manifest(out / "lots.csv")  # photos exist, every row valid
    claims = read_manifest(out / "claims.csv")
    assert [lot.lot_id for lot in truth] == [lot.lot_id for lot in claims]
    assert {"season", "referenced", "admixture_share", "admixture_region", "admixture_variety", "field_id"} <= set(
        truth[0].extra
    )
    assert set(claims[0].extra) == {"fraud_kind"}
    traits = _rows(out / "latent_traits.csv")
    assert list(traits[0]) == ["lot_id", *LATENT_TRAITS] and len(traits) == 30
    parameters = json.loads((out / "world.json").read_text())
    assert parameters["config"]["seed"] == 11 and "provenance_sd" in parameters["parameters"]


def test_origin_points_have_six_decimals_and_lie_in_their_departement(world: WorldSummary) -> None:
    rows = _rows(world.lots_csv)
    assert all(len(row["lon"].split(".")[1]) >= 4 for row in rows)
    regions = load_region_set("fr-departements")
    found = regions.lookup_points(np.array([float(r["lon"]) for r in rows]), np.array([float(r["lat"]) for r in rows]))
    assert list(found) == [r["region"] for r in rows]


def test_the_requested_share_of_claims_is_false_with_every_kind_present(world: WorldSummary) -> None:
    kinds = [row["fraud_kind"] for row in _rows(world.claims_csv)]
    assert set(kinds) <= set(FRAUD_KINDS)
    assert kinds.count("genuine") == 15
    assert set(kinds) == set(FRAUD_KINDS)


def test_each_false_claim_lies_the_way_its_kind_says(world: WorldSummary) -> None:
    regions = load_region_set("fr-departements")
    referenced = set(CONFIG.regions)
    for truth, claim in zip(_rows(world.lots_csv), _rows(world.claims_csv), strict=True):
        kind = claim["fraud_kind"]
        same_place = (claim["region"], claim["lon"], claim["lat"]) == (truth["region"], truth["lon"], truth["lat"])
        same_date = claim["harvest_date"] == truth["harvest_date"]
        assert claim["photos"] == truth["photos"] and claim["device"] == truth["device"]
        assert (truth["referenced"] == "false") == (kind == "missing_origin")
        assert (float(truth["admixture_share"]) > 0) == (kind in ("admixture", "variety_admixture"))
        assert (truth["admixture_variety"] != "") == (kind == "variety_admixture")
        assert (claim["variety"] != truth["variety"]) == (kind == "variety_swap")
        if kind in ("genuine", "variety_swap"):
            assert same_place and same_date
        elif kind == "neighbour_origin":
            assert claim["region"] in regions.neighbours(truth["region"]) and claim["region"] in referenced
            assert same_date
        elif kind == "far_origin":
            assert regions.distance_km(claim["region"], truth["region"]) >= FAR_ORIGIN_MIN_KM
        elif kind == "missing_origin":
            assert truth["region"] not in referenced and claim["region"] in referenced
        elif kind == "wrong_season":
            assert same_place and claim["harvest_date"][4:] == truth["harvest_date"][4:]
            assert int(claim["harvest_date"][:4]) in CONFIG.seasons
            assert claim["harvest_date"][:4] != truth["season"]
        elif kind == "admixture":
            assert same_place and same_date
            assert 0.2 <= float(truth["admixture_share"]) <= 0.5
            assert truth["admixture_region"] in referenced and truth["admixture_region"] != truth["region"]
        elif kind == "variety_admixture":
            assert same_place and same_date and claim["variety"] == truth["variety"]
            assert 0.2 <= float(truth["admixture_share"]) <= 0.5
            assert truth["admixture_variety"] in {v.name for v in varieties_of(truth["species"])}
        if kind != "admixture":
            assert truth["admixture_region"] == ""
        if kind == "variety_swap":
            assert claim["variety"] in {v.name for v in varieties_of(truth["species"])}


def test_lots_from_one_field_share_its_point(world: WorldSummary) -> None:
    points: dict[str, set[tuple[str, str]]] = {}
    for row in _rows(world.lots_csv):
        points.setdefault(row["field_id"], set()).add((row["lon"], row["lat"]))
    assert all(len(p) == 1 for p in points.values())
    assert len(points) < 30  # several lots come from the same field


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(world: WorldSummary, tmp_path: Path) -> None:
    again = simulate_world(CONFIG, tmp_path / "again", workers=2)
    for name in ("lots.csv", "claims.csv", "latent_traits.csv", "world.json"):
        assert (world.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name
    photos = sorted(p.name for p in (world.out_dir / "photos").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(
        world.out_dir / "photos", again.out_dir / "photos", photos, shallow=False
    )
    assert not mismatch and not errors and len(match) == 60


def test_another_seed_gives_another_world_in_the_same_nature(world: WorldSummary, tmp_path: Path) -> None:
    other = simulate_world(
        WorldConfig(lots=4, photos_per_lot=1, seed=12, max_photo_side=96, fraud_rate=0.0), tmp_path / "o", workers=1
    )
    assert other.lots_csv.read_bytes() != world.lots_csv.read_bytes()
    assert json.loads((other.out_dir / "world.json").read_text())["config"]["nature_seed"] == CONFIG.nature_seed


def test_a_world_is_not_written_over_another_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GrainproofError, match="not empty"):
        simulate_world(WorldConfig(lots=2, photos_per_lot=1, max_photo_side=96), tmp_path, workers=1)


def test_unknown_departement_is_named(tmp_path: Path) -> None:
    with pytest.raises(GrainproofError, match=r"--regions.*'99'"):
        simulate_world(WorldConfig(lots=2, regions=("51", "99")), tmp_path / "w", workers=1)


def test_held_out_phones_and_seasons_are_respected(tmp_path: Path) -> None:
    config = WorldConfig(
        lots=8, photos_per_lot=1, seed=3, devices=("moto-g22",), seasons=(2022,), max_photo_side=96, fraud_rate=0.25
    )
    summary = simulate_world(config, tmp_path / "held", workers=1)
    rows = _rows(summary.lots_csv)
    assert {r["device"] for r in rows} == {"moto-g22"}
    assert {r["season"] for r in rows} == {"2022"}
    assert "wrong_season" not in {r["fraud_kind"] for r in _rows(summary.claims_csv)}


def test_cli_simulate_writes_a_world_and_prints_a_summary(tmp_path: Path) -> None:
    from grainproof.cli import app

    out = tmp_path / "cli-world"
    result = CliRunner().invoke(
        app,
        ["simulate", "--out", str(out), "--lots", "3", "--photos-per-lot", "1", "--seed", "5", "--max-side", "96",
         "--workers", "1", "--seasons", "2023,2024"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 lots, 3 photos" in result.output
    assert (out / "claims.csv").is_file()


def test_cli_simulate_explains_a_bad_season(tmp_path: Path) -> None:
    from grainproof.cli import app

    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "x"), "--seasons", "2024,last"])
    assert isinstance(result.exception, GrainproofError)
    assert "'last' is not a year" in str(result.exception)


def test_reference_and_intake_share_no_lot_and_no_field(world: WorldSummary) -> None:
    # The README's batch flow used to build the reference from every lot and then verify those same lots.
    truth = {lot.lot_id: lot for lot in read_manifest(world.lots_csv)}
    reference = read_manifest(world.reference_csv)
    intake = read_manifest(world.intake_csv)
    assert reference and intake and len(reference) + len(intake) == len(truth)
    assert not {lot.lot_id for lot in reference} & {lot.lot_id for lot in intake}
    fields = {truth[lot.lot_id].extra["field_id"] for lot in reference}
    assert not fields & {truth[lot.lot_id].extra["field_id"] for lot in intake}
    # Reference lots carry the truth, intake lots the declarations; no unreferenced region in the reference.
    assert all(lot.extra["referenced"] == "true" for lot in reference)
    assert all("fraud_kind" in lot.extra for lot in intake)
