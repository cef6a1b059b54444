"""The cells' tails fitted to the reference lots (reference.cells.fit_tail_dof): heavier-tailed classes than
the groups' own Student t get a capped t, Gaussian ones keep theirs, and p-values stay valid either way."""

from __future__ import annotations

import json
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.domain import Claim, LotRecord, Origin
from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.reference.cells import fit_tail_dof, tail_stretch
from grainproof.scoring.plausibility import score_claim
from grainproof.scoring.synthetic import gaussian_world

K = 4
ORIGINS = 4


def _heavy_lots(n: int, *, seed: int, prefix: str, tail: float) -> list[LotRecord]:
    """Lots of four origins whose spread about their centre is a multivariate t with `tail` degrees of freedom
    (infinite: Gaussian), centres fixed across calls."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0.0, 1.5, (ORIGINS, K))
    out = []
    for i in range(n):
        origin = int(rng.integers(ORIGINS))
        weight = rng.chisquare(tail) / tail if math.isfinite(tail) else 1.0
        x = centres[origin] + rng.normal(0.0, 1.0, K) / np.sqrt(weight)
        claim = Claim(lot_id=f"{prefix}{i:04d}", species="glass", variety="all", origin=Origin(region=f"R{origin}"))
        out.append(LotRecord(claim=claim, features=tuple(float(v) for v in x)))
    return out


def _p(model: ReferenceModel, lot: LotRecord, origin: str) -> float:
    return score_claim(
        model,
        species="glass",
        variety="all",
        origin_unit=origin,
        season=None,
        vector=np.asarray(lot.features),
        n_alternatives=0,
        n_nearest=0,
    ).plausibility


def _claims(model: ReferenceModel, lots: list[LotRecord]) -> tuple[np.ndarray, np.ndarray]:
    """p-values of the lots declared as their own origin and as the next one."""
    genuine = np.array([_p(model, lot, lot.claim.origin.region or "") for lot in lots])
    false = np.array([_p(model, lot, f"R{(int((lot.claim.origin.region or 'R0')[1:]) + 1) % ORIGINS}") for lot in lots])
    return genuine, false


@given(group_dof=st.floats(2.01, 1e5), dof=st.floats(2.01, 1e5))
def test_the_tail_stretch_keeps_each_groups_covariance(group_dof: float, dof: float) -> None:
    stretch = float(tail_stretch(np.array([group_dof]), np.array([dof]))[0])
    if dof < group_dof:
        # A t's covariance is scale * dof / (dof - 2): heavier tails, the same spread.
        assert stretch * dof / (dof - 2.0) == pytest.approx(group_dof / (group_dof - 2.0), rel=1e-9)
        assert stretch < 1.0
    else:
        assert stretch == 1.0


def test_gaussian_distances_keep_the_groups_own_t() -> None:
    rng = np.random.default_rng(0)
    group_dof = np.full(3000, 200.0)
    distance = K * rng.f(K, group_dof)
    assert fit_tail_dof(distance, group_dof, K) >= 100.0


def test_heavy_tailed_distances_get_a_capped_t_near_their_own() -> None:
    rng = np.random.default_rng(1)
    group_dof = np.full(3000, 200.0)
    # Lots spread as a t with 4 degrees of freedom and the groups' covariance.
    distance = K * rng.f(K, 4.0, 3000) * tail_stretch(group_dof, np.full(3000, 4.0))
    assert 3.0 <= fit_tail_dof(distance, group_dof, K) <= 5.5


def test_too_few_lots_keep_the_groups_own_t() -> None:
    assert fit_tail_dof(np.full(10, 50.0), np.full(10, 20.0), K) == math.inf


def test_a_heavy_tailed_reference_is_fitted_heavy_and_a_gaussian_one_is_not() -> None:
    heavy = fit_reference_model(_heavy_lots(200, seed=1, prefix="r", tail=3.0), seed=0)
    gaussian = fit_reference_model(_heavy_lots(200, seed=1, prefix="r", tail=math.inf), seed=0)
    assert heavy.species["glass"].tail_dof < 8.0
    assert gaussian.species["glass"].tail_dof > 30.0
    cells = heavy.species["glass"].cells
    assert cells is not None and cells.tail_dof == heavy.species["glass"].tail_dof
    assert all(model.tail_dof == cells.tail_dof for model in heavy.species["glass"].fold_cells)


@pytest.mark.slow
def test_fitted_tails_keep_p_values_valid_and_catch_more_false_origins_on_heavy_tailed_lots() -> None:
    # Four origins whose lots spread as a t with 3 degrees of freedom: a genuine lot far out in its own heavy
    # tail is ordinary, so the groups' lighter t set the bar for false claims too high (measured: at 0.05 the
    # fitted tails catch 0.68 of the claims of the next origin, the groups' own t 0.36, both at false alarm 0.05).
    reference = _heavy_lots(200, seed=1, prefix="r", tail=3.0)
    fitted = fit_reference_model(reference, seed=0)
    with mock.patch("grainproof.reference.model.fit_tail_dof", return_value=math.inf):
        own = fit_reference_model(reference, seed=0)
    lots = _heavy_lots(400, seed=2, prefix="g", tail=3.0)
    genuine, false = _claims(fitted, lots)
    genuine_own, false_own = _claims(own, lots)
    for alpha in (0.05, 0.1):
        spread = np.sqrt(alpha * (1 - alpha))
        tolerance = 3 * spread / np.sqrt(len(lots)) + 3 * spread / np.sqrt(len(reference))
        assert abs(np.mean(genuine <= alpha) - alpha) <= tolerance, (alpha, np.mean(genuine <= alpha))
    assert np.mean(false <= 0.05) >= np.mean(false_own <= 0.05) + 0.15
    assert abs(np.mean(genuine_own <= 0.05) - 0.05) <= 0.04


def test_the_fitted_tail_is_saved_kept_by_updates_and_absent_from_format_6(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = fit_reference_model(_heavy_lots(200, seed=1, prefix="r", tail=3.0), seed=0)
    tail = model.species["glass"].tail_dof
    assert math.isfinite(tail)
    path = model.save(tmp_path / "m")
    loaded = ReferenceModel.load(path)
    assert loaded.species["glass"].tail_dof == tail
    probe = _heavy_lots(1, seed=5, prefix="probe", tail=3.0)[0]
    assert _p(loaded, probe, "R1") == _p(model, probe, "R1")
    updated = loaded.update(_heavy_lots(20, seed=6, prefix="new", tail=3.0))
    assert updated.species["glass"].tail_dof == tail
    assert updated.species["glass"].cells is not None and updated.species["glass"].cells.tail_dof == tail
    # A model of format 6 has no fitted tail: it loads with each group's own t, as it was built.
    manifest = json.loads((path / "manifest.json").read_text())
    for species in manifest["species"]:
        del species["tail_dof"]
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 6}))
    assert ReferenceModel.load(path).species["glass"].tail_dof == math.inf


def test_the_gaussian_world_keeps_its_groups_own_t() -> None:
    world = gaussian_world(dim=6, varieties=1, origins=4, seasons=2, seed=3)
    model = fit_reference_model(world.lots(300, seed=1), seed=0)
    assert model.species[world.species].tail_dof > 30.0
