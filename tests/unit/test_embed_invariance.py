"""DeviceNuisanceRemover: learns how phones shift embeddings and removes it, also for unseen phones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from grainproof.embed.invariance import DeviceNuisanceRemover

DIM = 24


def synthetic_lots(
    rng: np.random.Generator, phones: dict[str, np.ndarray], regions: int = 4, per_cell: int = 6
) -> tuple[np.ndarray, list[str], list[str], list[tuple[str, ...]]]:
    """Lot vectors = region centre (dims 0..5) + phone shift (dims 6..11 mixed) + noise."""
    centres = np.zeros((regions, DIM))
    centres[:, :6] = np.random.default_rng(99).normal(0, 1.0, size=(regions, 6))
    rows, devices, region_of = [], [], []
    strata: list[tuple[str, ...]] = []
    for r in range(regions):
        for name, shift in phones.items():
            for _ in range(per_cell):
                rows.append(centres[r] + shift + rng.normal(0, 0.25, DIM))
                devices.append(name)
                region_of.append(f"r{r}")
                strata.append(("soft_wheat", "apache", f"r{r}", "2024"))
    return np.asarray(rows), devices, region_of, strata


def phone_shift(rng: np.random.Generator, basis: np.ndarray) -> np.ndarray:
    return rng.normal(0, 2.0, size=len(basis)) @ basis


def ratio(X: np.ndarray, regions: list[str], devices: list[str]) -> float:
    diff = np.linalg.norm(X[:, None] - X[None], axis=-1)
    r, d = np.asarray(regions), np.asarray(devices)
    upper = np.triu(np.ones(len(X), dtype=bool), 1)
    between = diff[upper & (r[:, None] != r[None])].mean()
    within = diff[upper & (r[:, None] == r[None]) & (d[:, None] != d[None])].mean()
    return float(between / within)


def test_unseen_phone_no_longer_looks_like_another_origin() -> None:
    rng = np.random.default_rng(0)
    basis = np.zeros((3, DIM))
    basis[:, 6:12] = rng.normal(size=(3, 6))  # phones move embeddings in a 3-D subspace (colour, sharpness, noise)
    seen = {f"phone{i}": phone_shift(rng, basis) for i in range(6)}
    unseen = {f"new{i}": phone_shift(rng, basis) for i in range(3)}
    X_train, dev_train, _, strata = synthetic_lots(rng, seen)
    X_test, dev_test, reg_test, _ = synthetic_lots(rng, unseen)
    remover = DeviceNuisanceRemover(n_components=0.95).fit(X_train, dev_train, strata)
    before = ratio(X_test, reg_test, dev_test)
    after = ratio(remover.transform(X_test), reg_test, dev_test)
    assert 1 <= remover.n_components_ <= 6
    assert after > 1.5 * before


def test_region_differences_survive_the_projection() -> None:
    rng = np.random.default_rng(1)
    basis = np.zeros((2, DIM))
    basis[:, 12:16] = rng.normal(size=(2, 4))
    phones = {f"phone{i}": phone_shift(rng, basis) for i in range(5)}
    X, devices, regions, strata = synthetic_lots(rng, phones)
    cleaned = DeviceNuisanceRemover(n_components=2).fit(X, devices, strata).transform(X)
    region_means = np.stack([X[np.asarray(regions) == r].mean(axis=0) for r in sorted(set(regions))])
    cleaned_means = np.stack([cleaned[np.asarray(regions) == r].mean(axis=0) for r in sorted(set(regions))])
    spread_before = np.linalg.norm(region_means[:, None] - region_means[None], axis=-1).sum()
    spread_after = np.linalg.norm(cleaned_means[:, None] - cleaned_means[None], axis=-1).sum()
    # Region centres differ in dims 0..5, away from the phones' subspace: their distances are kept.
    assert spread_after > 0.95 * spread_before


def test_one_phone_only_leaves_vectors_unchanged() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, DIM))
    remover = DeviceNuisanceRemover().fit(X, ["only-phone"] * 20, ["s"] * 20)
    assert remover.n_components_ == 0
    assert np.array_equal(remover.transform(X), X)


def test_fit_does_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(3)
    basis = rng.normal(size=(2, DIM))
    X, devices, _, strata = synthetic_lots(rng, {f"p{i}": phone_shift(rng, basis) for i in range(4)})
    order = rng.permutation(len(X))
    a = DeviceNuisanceRemover(n_components=2).fit(X, devices, strata)
    b = DeviceNuisanceRemover(n_components=2).fit(X[order], [devices[i] for i in order], [strata[i] for i in order])
    assert np.allclose(np.abs(a.components_ @ b.components_.T), np.eye(2), atol=1e-8)


@settings(max_examples=25)
@given(st.integers(min_value=0, max_value=10_000))
def test_transform_is_an_idempotent_projection(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 10))
    devices = [f"d{i % 3}" for i in range(30)]
    strata = [f"s{i % 2}" for i in range(30)]
    remover = DeviceNuisanceRemover(n_components=3).fit(X, devices, strata)
    once = remover.transform(X)
    assert np.allclose(remover.transform(once), once, atol=1e-9)
    assert np.allclose((once - remover.mean_) @ remover.components_.T, 0.0, atol=1e-9)


def test_follows_sklearn_estimator_conventions() -> None:
    remover = DeviceNuisanceRemover(n_components=3, max_components=5)
    assert clone(remover).get_params() == {"n_components": 3, "max_components": 5}
    with pytest.raises(Exception, match="not fitted"):
        remover.transform(np.zeros((2, 4)))
    fitted = remover.fit(np.random.default_rng(0).normal(size=(12, 4)), ["a", "b"] * 6, ["s"] * 12)
    assert fitted is remover
    with pytest.raises(ValueError, match="shape"):
        remover.transform(np.zeros((2, 5)))
