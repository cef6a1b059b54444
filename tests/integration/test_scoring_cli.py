"""`grainproof reference build`, `verify` and `evaluate` end to end on a small Gaussian world."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.domain import Origin
from grainproof.errors import GrainproofError, ModelError
from grainproof.manifest import write_manifest
from grainproof.reference import ReferenceModel
from grainproof.scoring.synthetic import gaussian_world

WORLD = gaussian_world(dim=6, varieties=1, origins=6, seasons=2, origin_scale=1.2, devices=4, seed=5)
runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    reference = write_manifest(root / "reference.csv", WORLD.lots(240, seed=1, prefix="ref"))
    genuine = WORLD.lots(30, seed=2, prefix="ok")
    lying = [
        replace(lot, claim=replace(lot.claim, lot_id=f"lie{i}", origin=Origin(region=_next(lot.claim.origin.region))))
        for i, lot in enumerate(WORLD.lots(30, seed=3, prefix="x"))
    ]
    claims = write_manifest(root / "claims.csv", [*genuine, *lying])
    model_dir = root / "model"
    result = runner.invoke(app, ["reference", "build", str(reference), "--out", str(model_dir)])
    assert result.exit_code == 0, result.output
    return {"root": root, "reference": reference, "claims": claims, "model": model_dir}


def _next(region: str | None) -> str:
    return WORLD.origins[(WORLD.origins.index(region or "") + 1) % len(WORLD.origins)]


def test_reference_build_writes_a_loadable_versioned_model(files: dict[str, Path]) -> None:
    manifest = json.loads((files["model"] / "manifest.json").read_text())
    model = ReferenceModel.load(files["model"])
    assert manifest["version"] == model.version and model.varieties == [("soft_wheat", "variety0")]


def test_verify_writes_one_verdict_per_claim_and_flags_lies(files: dict[str, Path]) -> None:
    out = files["root"] / "results.jsonl"
    result = runner.invoke(
        app, ["verify", str(files["model"]), str(files["claims"]), "--out", str(out), "--alpha", "0.05", "--fdr", "0.1"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 60
    for key in (
        "lot_id",
        "plausibility",
        "origin_plausibility",
        "season_plausibility",
        "flagged",
        "reasons",
        "alternatives",
        "admixture",
        "model_version",
        "flagged_fdr",
    ):
        assert key in rows[0]
    genuine_flags = sum(r["flagged"] for r in rows if r["lot_id"].startswith("ok"))
    lie_flags = sum(r["flagged"] for r in rows if r["lot_id"].startswith("lie"))
    assert lie_flags >= 20 and genuine_flags <= 5


def test_verify_says_when_its_table_shows_only_the_lowest_p_values(files: dict[str, Path]) -> None:
    out = files["root"] / "noticed.jsonl"
    result = runner.invoke(app, ["verify", str(files["model"]), str(files["claims"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"the 20 lowest p-values of 60 claims; every verdict is in {out}" in result.stdout
    shown = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(shown) == 20
    few = write_manifest(files["root"] / "few.csv", WORLD.lots(5, seed=7, prefix="few"))
    result = runner.invoke(app, ["verify", str(files["model"]), str(few), "--out", str(out)])
    assert result.exit_code == 0 and "lowest p-values" not in result.stdout, "all 5 shown: nothing left out"


def test_verify_and_reference_build_answer_in_json(files: dict[str, Path]) -> None:
    out = files["root"] / "as-json.jsonl"
    result = runner.invoke(app, ["verify", str(files["model"]), str(files["claims"]), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["claims"] == 60 and len(printed["verdicts"]) == 60, "JSON leaves no verdict out"
    p_values = [v["plausibility"] for v in printed["verdicts"]]
    assert p_values == sorted(p_values) and printed["flagged"] == sum(v["flagged"] for v in printed["verdicts"])
    build = runner.invoke(
        app, ["reference", "build", str(files["reference"]), "--out", str(files["root"] / "m2"), "--json"]
    )
    assert build.exit_code == 0, build.output
    built = json.loads(build.stdout)
    assert built["version"] == ReferenceModel.load(files["root"] / "m2").version
    assert built["species"][0]["reference_lots"] == 240
    # The cap on the cells' tails is reported as the model holds it (null: each group's own t).
    tail = ReferenceModel.load(files["root"] / "m2").species[built["species"][0]["species"]].tail_dof
    assert built["species"][0]["tail_dof"] == (None if math.isinf(tail) else round(tail, 2))


def test_verify_against_a_missing_model_is_a_clear_error(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["verify", str(files["root"] / "nope"), str(files["claims"]), "--out", "x.jsonl"])
    assert isinstance(result.exception, ModelError)
    assert "grainproof reference build" in str(result.exception)


def test_evaluate_reports_ours_and_every_peer_by_fraud_kind(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["evaluate", str(files["reference"]), "--folds", "4", "--alpha", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["methods"]) == {
        "grainproof",
        "grainproof, variety check",
        "grainproof, any check (verdict)",
        "lda",
        "random_forest",
        "cell_mahalanobis",
        "knn_distance",
    }, "no units beside the manifest: no purity check"
    ours = report["methods"]["grainproof"]
    assert set(ours["kinds"]) == {"neighbour_origin", "far_origin", "missing_origin", "wrong_season"}
    assert ours["false_alarm"] <= 0.12
    assert ours["kinds"]["neighbour_origin"]["auroc"] > 0.8


def test_evaluate_refuses_a_plot_it_cannot_draw_before_any_work(files: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(files["reference"]), "--plot", str(tmp_path / "curves.jpg")])
    assert result.exit_code != 0 and ".png or .svg" in str(result.exception or result.output)
    assert "cross-validating" not in result.output and not (tmp_path / "curves.jpg").exists()


def test_one_bad_claim_gets_an_error_record_and_the_batch_goes_on(files: dict[str, Path]) -> None:
    # An unknown variety on one claim of many used to end `verify` with exit 2 and no output file at all.
    lots = WORLD.lots(12, seed=7, prefix="day")
    bad = replace(lots[9], claim=replace(lots[9].claim, variety="spelt"))
    claims = write_manifest(files["root"] / "day.csv", [*lots[:9], bad, *lots[10:]])
    out = files["root"] / "day.jsonl"
    result = runner.invoke(app, ["verify", str(files["model"]), str(claims), "--out", str(out), "--alpha", "0.05"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["lot_id"] for r in rows] == [lot.lot_id for lot in lots]
    assert rows[9]["status"] == "error" and rows[9]["error"] == "unknown_variety" and "spelt" in rows[9]["detail"]
    assert all("plausibility" in r for i, r in enumerate(rows) if i != 9)
    assert "1 could not be verified" in result.output
    strict = runner.invoke(app, ["verify", str(files["model"]), str(claims), "--out", str(out), "--strict"])
    assert strict.exit_code == 2 and out.is_file()


def test_the_exit_code_tells_scripts_whether_a_lot_was_flagged(files: dict[str, Path]) -> None:
    out = files["root"] / "flags.jsonl"
    args = ["verify", str(files["model"]), str(files["claims"]), "--out", str(out), "--alpha", "0.05", "--exit-code"]
    assert runner.invoke(app, args).exit_code == 1  # the lies are flagged
    genuine = write_manifest(files["root"] / "ok.csv", WORLD.lots(3, seed=11, prefix="fine"))
    clean = ["verify", str(files["model"]), str(genuine), "--out", str(out), "--alpha", "0.001", "--exit-code"]
    assert runner.invoke(app, clean).exit_code == 0


def test_verify_warns_when_a_claimed_lot_is_one_of_the_reference_lots(files: dict[str, Path]) -> None:
    # The README's batch flow used to verify the very lots the reference was built from.
    out = files["root"] / "self.jsonl"
    result = runner.invoke(app, ["verify", str(files["model"]), str(files["reference"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(any("itself one of this model's reference lots" in w for w in r["warnings"]) for r in rows)


def test_a_reference_too_small_for_the_alpha_warns_at_build(files: dict[str, Path]) -> None:
    small = write_manifest(files["root"] / "small.csv", WORLD.lots(40, seed=4, prefix="s"))
    result = runner.invoke(app, ["reference", "build", str(small), "--out", str(files["root"] / "small-model")])
    assert result.exit_code == 0, result.output
    assert "nothing can be flagged at alpha=0.01" in " ".join(result.output.split())


def test_verify_writes_variety_and_purity_columns_and_says_why_purity_is_missing(tmp_path: Path) -> None:
    import csv

    import numpy as np

    from grainproof.manifest import units_path

    world = gaussian_world(dim=6, varieties=2, origins=3, seasons=1, seed=8)
    rng = np.random.default_rng(0)

    def kernels(lots: list) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        return {lot.lot_id: np.asarray(lot.features) + rng.normal(0, 0.3, (12, world.dim)) for lot in lots}

    reference = world.lots(150, seed=1, prefix="ref")
    reference_csv = write_manifest(tmp_path / "reference.csv", reference)
    np.savez(units_path(reference_csv), **kernels(reference))
    model_dir = tmp_path / "model"
    assert runner.invoke(app, ["reference", "build", str(reference_csv), "--out", str(model_dir)]).exit_code == 0
    genuine = world.lots(6, seed=2, prefix="ok")
    swapped = [
        replace(
            lot, claim=replace(lot.claim, lot_id=f"swap{i}", variety=world.varieties[1 - int(lot.claim.variety[-1])])
        )
        for i, lot in enumerate(world.lots(4, seed=3, prefix="x"))
    ]
    claims_csv = write_manifest(tmp_path / "claims.csv", [*genuine, *swapped])
    np.savez(units_path(claims_csv), **kernels(genuine[:3]))  # half the genuine lots come with their kernels
    out = tmp_path / "verdicts.csv"
    result = runner.invoke(app, ["verify", str(model_dir), str(claims_csv), "--out", str(out), "--alpha", "0.05"])
    assert result.exit_code == 0, result.output
    assert "purity not estimated: no per-kernel units" in result.output and ": 7 lot(s)." in result.output
    rows = {row["lot_id"]: row for row in csv.DictReader(out.open(encoding="utf-8"))}
    assert len(rows) == 10
    for lot in genuine[:3]:
        row = rows[lot.lot_id]
        assert float(row["purity_low"]) <= float(row["purity"]) <= float(row["purity_high"]) == 1.0
        assert row["purity_note"] == "" and row["likeliest_variety"] == lot.claim.variety
    for lot in [*genuine[3:], *swapped]:
        assert rows[lot.lot_id]["purity"] == "" and rows[lot.lot_id]["purity_note"].startswith("not estimated")
    for lot in swapped:
        row = rows[lot.lot_id]
        assert "variety" in row["flagged_checks"].split(";") and float(row["variety_plausibility"]) <= 0.05
        assert float(row["checks_plausibility"]) <= 0.05  # the two checks together flag it too
        assert row["likeliest_variety"] != ""
        # The likeliest variety is the true one unless the lot is also the rarest of its true variety's lots (its
        # p-value there at the floor, 1 / (n + 1), beside the declared one's): about once in n + 1 lots.
        if float(row["likeliest_variety_p"]) > float(row["variety_plausibility"]):
            assert row["likeliest_variety"] != lot.claim.variety
    named = [rows[lot.lot_id]["likeliest_variety"] != lot.claim.variety for lot in swapped]
    assert sum(named) >= len(swapped) - 1
    printed = json.loads(
        runner.invoke(
            app, ["verify", str(model_dir), str(claims_csv), "--out", str(tmp_path / "v.jsonl"), "--json"]
        ).stdout
    )
    by_lot = {v["lot_id"]: v for v in printed["verdicts"]}
    assert by_lot["swap0"]["likeliest_variety"] == rows["swap0"]["likeliest_variety"]
    assert {"variety_plausibility", "checks_plausibility", "purity", "purity_low", "purity_high", "purity_note"} <= set(
        by_lot["swap0"]
    )


def test_a_bad_setting_stops_the_batch_with_one_error_and_writes_nothing(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from grainproof.settings import get_settings

    monkeypatch.setenv("GRAINPROOF_MIN_PURITY", "1.5")
    out = files["root"] / "bad-setting.jsonl"
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["verify", str(files["model"]), str(files["claims"]), "--out", str(out)])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    # One error for the run (the CLI's entry point prints it as a sentence), not an error record per claim.
    assert isinstance(result.exception, GrainproofError)
    assert "GRAINPROOF_MIN_PURITY=1.5 must lie in [0, 1)" in str(result.exception)
    assert not out.exists()
