"""The streaming reference build: vectors read chunk by chunk from a file give the in-memory model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.errors import ModelError
from grainproof.reference import fit_reference_model
from grainproof.reference.model import fit_reference_arrays
from grainproof.reference.vectors import InMemoryVectors, NpyVectors, table_and_vectors
from grainproof.scale.verify_bench import VerifyBench, summarise
from grainproof.scoring.synthetic import gaussian_world

WORLD = gaussian_world(dim=10, varieties=2, origins=4, seasons=2, devices=2, origin_scale=0.4, seed=5)


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    array = np.random.default_rng(0).normal(size=(1000, 7)).astype(np.float32)
    path = tmp_path_factory.mktemp("vectors") / "vectors.npy"
    np.save(path, array)
    return path, array


@given(st.lists(st.integers(0, 999), min_size=0, max_size=300, unique=True))
def test_vector_file_returns_exactly_the_rows_asked_for(vector_file: tuple[Path, np.ndarray], rows: list[int]) -> None:
    path, array = vector_file
    wanted = np.sort(np.asarray(rows, dtype=np.int64))
    np.testing.assert_array_equal(NpyVectors(path).take(wanted), array[wanted].astype(np.float64))


def test_vector_file_that_is_not_a_matrix_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(ModelError, match="2-d"):
        NpyVectors(tmp_path / "flat.npy")


def test_streaming_build_from_a_file_equals_the_in_memory_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lots = WORLD.lots(400, seed=1)
    table, in_memory = table_and_vectors(lots, None, None)
    np.save(tmp_path / "v.npy", in_memory.array)
    monkeypatch.setattr("grainproof.reference.model.CHUNK_ROWS", 37)  # many chunks, ragged last one
    from_file = fit_reference_arrays(table, NpyVectors(tmp_path / "v.npy"), seed=0)
    from_memory = fit_reference_arrays(table, InMemoryVectors(in_memory.array), seed=0)
    assert from_file.version == from_memory.version
    monkeypatch.undo()
    from_records = fit_reference_model(lots, seed=0)
    for name, ref in from_records.species.items():
        np.testing.assert_allclose(from_file.species[name].lot_z, ref.lot_z, atol=1e-6)
        np.testing.assert_allclose(from_file.species[name].calibration, ref.calibration, atol=1e-9)


def test_streaming_build_does_not_depend_on_row_order(tmp_path: Path) -> None:
    lots = WORLD.lots(300, seed=2)
    table, vectors = table_and_vectors(lots, None, None)
    shuffled_lots = [lots[i] for i in np.random.default_rng(1).permutation(len(lots))]
    shuffled_table, shuffled_vectors = table_and_vectors(shuffled_lots, None, None)
    np.save(tmp_path / "a.npy", vectors.array)
    np.save(tmp_path / "b.npy", shuffled_vectors.array)
    first = fit_reference_arrays(table, NpyVectors(tmp_path / "a.npy"), seed=0)
    second = fit_reference_arrays(shuffled_table, NpyVectors(tmp_path / "b.npy"), seed=0)
    assert first.version == second.version


def test_vectors_and_labels_of_different_lengths_are_refused(tmp_path: Path) -> None:
    table, vectors = table_and_vectors(WORLD.lots(50, seed=3), None, None)
    with pytest.raises(ModelError, match="one vector per lot"):
        fit_reference_arrays(table, InMemoryVectors(vectors.array[:-1]), seed=0)


def test_load_figures_are_percentiles_and_ratios_against_the_trivial_endpoint() -> None:
    health = summarise("health", 8, [0.001] * 99 + [0.010], errors=0, seconds=1.0)
    vectors = summarise("vectors", 8, [0.004] * 99 + [0.040], errors=1, seconds=2.0)
    assert health.p50_ms == pytest.approx(1.0) and health.throughput_per_s == pytest.approx(100.0)
    assert vectors.p99_ms > vectors.p50_ms == pytest.approx(4.0)
    bench = VerifyBench(
        workers=2, server="grainproof", database="sqlite", reference_lots=10, dim=4, backbone_id="b", cpu_count=2
    )
    bench.results += [health, vectors]
    (ratio,) = bench.ratios()
    assert ratio["endpoint"] == "vectors" and ratio["p50_ratio"] == pytest.approx(4.0)
    assert ratio["throughput_ratio"] == pytest.approx(0.5)
