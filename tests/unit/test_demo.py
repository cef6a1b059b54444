"""The demo's own steps: which lots are held out of the reference, and a data dir it may empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from grainproof.demo import DemoConfig, claim_json, fresh_data_dir, split_world, summary_rows
from grainproof.errors import GrainproofError

HEADER = "lot_id,species,variety,lon,lat,region,harvest_date,device,photos"
#: (lot id, true region, referenced, declared region, fraud kind)
ROWS = (
    ("L1", "51", "true", "51", "genuine"),
    ("L2", "51", "true", "51", "genuine"),
    ("L3", "02", "true", "02", "genuine"),
    ("L4", "80", "true", "31", "far_origin"),
    ("L5", "08", "false", "51", "missing_origin"),
    ("L6", "02", "true", "02", "genuine"),
    ("L7", "31", "true", "86", "far_origin"),
)


def _world(tmp_path: Path) -> Path:
    lots = [f"{HEADER},season,referenced"]
    claims = [f"{HEADER},fraud_kind"]
    for lot_id, true_region, referenced, declared, kind in ROWS:
        lots.append(
            f"{lot_id},soft_wheat,aurelio,,,{true_region},2024-07-20,pixel-7,photos/{lot_id}.jpg,2024,{referenced}"
        )
        claims.append(f"{lot_id},soft_wheat,aurelio,,,{declared},2024-07-20,pixel-7,photos/{lot_id}.jpg,{kind}")
    (tmp_path / "lots.csv").write_text("\n".join(lots) + "\n", encoding="utf-8")
    (tmp_path / "claims.csv").write_text("\n".join(claims) + "\n", encoding="utf-8")
    return tmp_path


def test_intake_lots_are_held_out_of_the_reference(tmp_path: Path) -> None:
    reference, intake = split_world(_world(tmp_path), genuine_lots=2)
    assert [(i.claim.lot_id, i.fraud_kind) for i in intake] == [
        ("L1", "genuine"),
        ("L2", "genuine"),
        ("L4", "far_origin"),
        ("L5", "missing_origin"),
    ], "the first genuine lots, then one lot of each fraud kind"
    held_out = {i.claim.lot_id for i in intake}
    assert not held_out & {lot.lot_id for lot in reference}
    assert {lot.lot_id for lot in reference} == {"L3", "L6", "L7"}, "unreferenced regions never join the reference"


def test_intake_lots_keep_the_truth_next_to_the_declaration(tmp_path: Path) -> None:
    _, intake = split_world(_world(tmp_path), genuine_lots=1)
    far = next(i for i in intake if i.fraud_kind == "far_origin")
    assert far.claim.claim.origin.region == "31" and far.true_region == "80" and far.true_season == 2024
    assert claim_json(far.claim)["origin"]["region"] == "31"


def test_demo_refuses_to_empty_a_folder_it_did_not_create(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work", encoding="utf-8")
    with pytest.raises(GrainproofError, match="not created by `grainproof demo`"):
        fresh_data_dir(precious)
    assert (precious / "thesis.tex").exists()


def test_demo_data_dir_is_emptied_but_keeps_its_embedding_cache(tmp_path: Path) -> None:
    data = fresh_data_dir(tmp_path / "demo")
    (data / "grainproof.db").write_text("old run", encoding="utf-8")
    (data / "cache").mkdir()
    (data / "cache" / "vectors.npy").write_text("cached", encoding="utf-8")
    fresh_data_dir(data)
    assert not (data / "grainproof.db").exists()
    assert (data / "cache" / "vectors.npy").exists()


def test_summary_shows_the_best_alternative_and_the_truth(tmp_path: Path) -> None:
    _, intake = split_world(_world(tmp_path), genuine_lots=1)
    far = [i for i in intake if i.fraud_kind == "far_origin"]
    verdict = {
        "declared_origin_unit": "31",
        "plausibility": 0.0004,
        "origin_plausibility": 0.0004,
        "season_plausibility": 0.5,
        "flagged": True,
        "alternatives": [
            {"origin_unit": "02", "season": 2024, "p_value": 0.05, "probability": 0.1},
            {"origin_unit": "80", "season": 2024, "p_value": 0.6, "probability": 0.9},
        ],
    }
    (row,) = summary_rows(far, [{"id": "v1", "verdict": verdict}])
    assert row["truth"] == "far_origin (80 2024)" and row["declared"] == "31 2024"
    assert row["top alternative"] == "80 2024 (p=0.600)" and row["p"] == "<0.001" and row["flagged"] == "yes"
    assert row["variety p"] == "—"  # no variety check ran


def test_summary_shows_the_variety_check_that_flags_a_swap(tmp_path: Path) -> None:
    _, intake = split_world(_world(tmp_path), genuine_lots=1)
    verdict = {
        "declared_origin_unit": "31",
        "plausibility": 0.4,
        "origin_plausibility": 0.4,
        "season_plausibility": 0.5,
        "variety_plausibility": 0.012,
        "checks_plausibility": 0.024,
        "flagged": True,
        "alternatives": [],
    }
    (row,) = summary_rows(intake[:1], [{"id": "v1", "verdict": verdict}])
    assert row["variety p"] == "0.012" and row["together p"] == "0.024" and row["flagged"] == "yes"


def test_demo_world_must_be_big_enough_for_a_reference(tmp_path: Path) -> None:
    with pytest.raises(GrainproofError, match="too few"):
        DemoConfig(world_dir=tmp_path, data_dir=tmp_path, lots=10)


def test_demo_never_replaces_another_world_silently(tmp_path: Path) -> None:
    import json

    from grainproof.demo import ensure_world, no_progress

    world = tmp_path / "someone-elses"
    world.mkdir()
    _world(world)
    (world / "world.json").write_text(json.dumps({"config": {"lots": 600, "seed": 7}}), encoding="utf-8")
    config = DemoConfig(world_dir=world, data_dir=tmp_path / "data")
    with pytest.raises(GrainproofError, match=r"holds another world.*--fresh-world"):
        ensure_world(config, no_progress)
    assert json.loads((world / "world.json").read_text(encoding="utf-8"))["config"]["lots"] == 600
