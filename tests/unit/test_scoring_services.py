"""Use cases around the scoring core: unseen phones in evaluation, batch FDR flags, model refresh."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from grainproof.errors import ModelError
from grainproof.reference import ReferenceModel
from grainproof.scoring.synthetic import gaussian_world
from grainproof.services.evaluation import evaluate_lots
from grainproof.services.references import build_reference_model, update_reference_model
from grainproof.services.verification import batch_flags, verify_lots

WORLD = gaussian_world(dim=10, origins=6, origin_scale=0.6, seasons=2, devices=8, device_scale=1.5, seed=11)


@pytest.mark.slow
def test_new_phone_models_do_not_raise_false_alarms() -> None:
    """Phones held out of the reference shift lots along the phone directions; the remover must absorb that."""
    report = evaluate_lots(WORLD.lots(900, seed=1), folds=4, alpha=0.05, group_by="device", with_peers=False)
    ours = report.methods[0]
    assert ours.method == "grainproof"
    assert ours.false_alarm <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / ours.n_genuine)
    assert ours.kinds["neighbour_origin"].auroc > 0.75


def test_built_model_verifies_lots_and_flags_a_batch_at_a_false_discovery_rate(tmp_path: Path) -> None:
    model = build_reference_model(WORLD.lots(300, seed=2), tmp_path / "model", seed=0)
    assert ReferenceModel.load(tmp_path / "model").version == model.version
    genuine = WORLD.lots(20, seed=3, prefix="ok")
    lies = [
        replace(lot, claim=replace(lot.claim, lot_id=f"lie{i}", origin=replace(lot.claim.origin, region="R00")))
        for i, lot in enumerate(WORLD.lots(40, seed=4, prefix="x"))
        if lot.claim.origin.region in ("R03", "R04", "R05")
    ]
    verdicts = verify_lots(model, [*genuine, *lies], alpha=0.05)
    flags = batch_flags(verdicts, 0.1)
    assert len(flags) == len(verdicts)
    false_flags = sum(f for f, v in zip(flags, verdicts, strict=True) if v.lot_id.startswith("ok"))
    assert sum(flags) > 0 and false_flags <= max(1, round(0.1 * sum(flags)) + 1)


def test_refresh_with_lots_from_another_backbone_is_refused(tmp_path: Path) -> None:
    model = build_reference_model(WORLD.lots(200, seed=5), tmp_path / "model", backbone_id="efficientnet_lite0@aa")
    new = [replace(lot, extra={"backbone": "efficientnet_lite2@bb"}) for lot in WORLD.lots(5, seed=6, prefix="new")]
    with pytest.raises(ModelError, match="re-embed"):
        update_reference_model(model, new)
    refreshed = update_reference_model(model, WORLD.lots(5, seed=6, prefix="new"), tmp_path / "model")
    assert ReferenceModel.load(tmp_path / "model").version == refreshed.version != model.version


def test_evaluation_reports_measured_and_unmeasured_lots_apart() -> None:
    # A quarter of the lots' photos gave no kernel measurements (zeros), their image features twice as noisy:
    # the report says how well each kind is checked, beside the figure over all lots.
    from grainproof.domain import with_measured_features

    world = gaussian_world(dim=8, origins=5, origin_scale=0.8, seasons=2, devices=6, seed=4)
    rng = np.random.default_rng(0)
    backbone = with_measured_features("net", 2)
    lots = []
    for i, lot in enumerate(world.lots(600, seed=1)):
        x = np.asarray(lot.features, dtype=float)
        head = np.zeros(2) if i % 4 == 0 else x[:2] + rng.normal(0.0, 0.1, 2)
        noise = rng.normal(0.0, 1.0 if i % 4 == 0 else 0.0, x.shape)
        lots.append(replace(lot, features=tuple(np.r_[head, x + noise]), extra={**lot.extra, "backbone": backbone}))
    report = evaluate_lots(lots, folds=3, alpha=0.05, group_by="device", with_peers=False)
    ours, (measured, unmeasured) = report.methods[0], report.ours_by_measurement
    assert (measured.method, unmeasured.method) == ("grainproof, measured lots", "grainproof, unmeasured lots")
    assert measured.n_genuine + unmeasured.n_genuine == ours.n_genuine
    assert unmeasured.n_genuine == pytest.approx(ours.n_genuine / 4, rel=0.2)
    for kind in ("far_origin", "wrong_season"):
        assert measured.kinds[kind].auroc > unmeasured.kinds[kind].auroc
    assert set(report.as_dict()["ours_by_measurement"]) == {measured.method, unmeasured.method}  # type: ignore[arg-type]
    # Lots all measured: nothing to break down.
    plain = evaluate_lots(world.lots(300, seed=2), folds=3, alpha=0.05, group_by="device", with_peers=False)
    assert plain.ours_by_measurement == ()


def test_a_claim_from_a_phone_no_reference_lot_was_taken_with_is_told_so(tmp_path: Path) -> None:
    reference = [lot for lot in WORLD.lots(300, seed=7) if lot.device != "phone7"]
    model = build_reference_model(reference, tmp_path / "model", seed=0)
    assert "phone7" not in model.phones and sum(model.phones.values()) == len(reference)
    assert ReferenceModel.load(tmp_path / "model").phones == model.phones
    lots = WORLD.lots(40, seed=8, prefix="c")
    verdicts = verify_lots(model, lots, alpha=0.05)
    for lot, verdict in zip(lots, verdicts, strict=True):
        told = any("No reference lot was photographed with this phone (phone7)" in w for w in verdict.warnings)
        assert told == (lot.device == "phone7"), lot.device
    assert any(lot.device == "phone7" for lot in lots)
    # Once it has reference lots (the daily refresh), its claims are no longer warned about.
    refreshed = update_reference_model(
        model, [lot for lot in WORLD.lots(20, seed=9, prefix="r") if lot.device == "phone7"]
    )
    assert refreshed.phones["phone7"] > 0
    assert not any("this phone" in w for v in verify_lots(refreshed, lots, alpha=0.05) for w in v.warnings)


def test_evaluation_reports_variety_swaps_and_cuts_beside_the_origin_kinds() -> None:
    # Three varieties; a tenth of the lots are cut with 40 % kernels of another variety (their units say so).
    from grainproof.services.evaluation import PURITY_CHECK, VARIETY_CHECK, VERDICT

    world = gaussian_world(dim=8, varieties=3, origins=5, origin_scale=0.8, seasons=2, devices=6, seed=5)
    rng = np.random.default_rng(3)
    lots, units = [], {}
    for i, lot in enumerate(world.lots(360, seed=1)):
        own = world.varieties.index(lot.claim.variety)
        mean = np.asarray(lot.features, dtype=float)
        kernels = mean + rng.normal(0.0, 0.5, (20, world.dim))
        if i % 10 == 0:
            other = (own + 1) % len(world.varieties)
            shift = world.variety_means[other] - world.variety_means[own]
            kernels[:8] += shift
            mean = kernels.mean(axis=0)
            lot = replace(lot, features=tuple(mean), extra={**lot.extra, "admixture_variety": world.varieties[other]})
        lots.append(lot)
        units[lot.lot_id] = kernels
    # A site that requires 90 % purity: its verdicts flag on purity too.
    report = evaluate_lots(lots, folds=3, alpha=0.05, group_by="device", with_peers=False, units=units, min_purity=0.9)
    methods = {m.method: m for m in report.methods}
    variety, purity, verdict = methods[VARIETY_CHECK], methods[PURITY_CHECK], methods[VERDICT]
    for method in (methods["grainproof"], variety, purity, verdict):
        assert {"variety_swap", "variety_admixture", "far_origin"} <= set(method.kinds)
    assert variety.kinds["variety_swap"].detection >= 0.9 and variety.false_alarm <= 0.1
    assert purity.kinds["variety_admixture"].detection >= 0.8 and purity.false_alarm <= 0.1
    assert purity.kinds["variety_admixture"].n == 36
    # Purity flags on its own; origin and variety flag together, so their false alarms do not add up.
    assert verdict.kinds["variety_admixture"].detection >= purity.kinds["variety_admixture"].detection
    assert verdict.kinds["variety_swap"].detection >= 0.9 and verdict.false_alarm <= 0.1
    # By default (GRAINPROOF_MIN_PURITY 0) purity is reported and the verdict does not flag on it.
    default = {
        m.method: m
        for m in evaluate_lots(lots, folds=3, alpha=0.05, group_by="device", with_peers=False, units=units).methods
    }
    assert default[PURITY_CHECK].kinds["variety_admixture"].detection == purity.kinds["variety_admixture"].detection
    assert default[VERDICT].false_alarm < methods["grainproof"].false_alarm + variety.false_alarm
    # Without units the purity check is left out rather than reported empty.
    plain = evaluate_lots(lots, folds=3, alpha=0.05, group_by="device", with_peers=False)
    assert PURITY_CHECK not in {m.method for m in plain.methods}


def test_evaluation_draws_false_alarms_and_detection_against_alpha(tmp_path: Path) -> None:
    from grainproof.errors import GrainproofError
    from grainproof.scoring.evaluation import CURVE_ALPHAS
    from grainproof.services.evaluation import OURS, VARIETY_CHECK, VERDICT
    from grainproof.services.evaluation_plot import evaluation_plot, genuine_band

    world = gaussian_world(dim=6, varieties=2, origins=5, origin_scale=0.8, seasons=2, devices=4, seed=11)
    report = evaluate_lots(world.lots(240, seed=1), folds=3, alpha=0.05, group_by="device", with_peers=False)
    methods = {m.method: m for m in report.methods}
    level = CURVE_ALPHAS.index(0.05)
    for name in (OURS, VARIETY_CHECK, VERDICT):
        curves = methods[name].curves
        assert set(curves) == {"genuine", *methods[name].kinds}
        # The curve says at 0.05 what the table says, and a higher alpha never flags fewer claims.
        assert curves["genuine"][level] == pytest.approx(methods[name].false_alarm)
        for kind, rates in curves.items():
            assert all(a <= b for a, b in itertools.pairwise(rates)), (name, kind)
            if kind != "genuine":
                assert rates[level] == pytest.approx(methods[name].kinds[kind].detection)
    assert report.as_dict()["methods"][OURS]["curves"]["alpha"] == list(CURVE_ALPHAS)  # type: ignore[index]
    low, high = genuine_band(200, np.asarray(CURVE_ALPHAS))
    assert np.all(low <= np.asarray(CURVE_ALPHAS)) and np.all(np.asarray(CURVE_ALPHAS) <= high)
    out = evaluation_plot(report, tmp_path / "plots" / "evaluation.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert b"<svg" in evaluation_plot(report, tmp_path / "evaluation.svg").read_bytes()[:400]
    with pytest.raises(GrainproofError, match=r"\.png or \.svg"):
        evaluation_plot(report, tmp_path / "evaluation.jpg")
    assert not list(tmp_path.glob("**/.*tmp*"))  # nothing half-written left behind
