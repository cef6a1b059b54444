"""The distributed path: embedding and reference building on a local 2-CPU Ray give the single-process results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from grainproof.reference import ReferenceModel, fit_reference_model
from grainproof.reference.model import fit_reference_arrays
from grainproof.reference.vectors import NpyVectors, table_and_vectors
from grainproof.scoring.synthetic import gaussian_world

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORLD = gaussian_world(dim=16, varieties=2, origins=5, seasons=2, devices=3, origin_scale=0.4, seed=3)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray instance (2 CPUs) for every Ray test: starting Ray takes seconds."""
    ray = pytest.importorskip("ray")
    from grainproof.scale.ray_engine import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def _same_model(local: ReferenceModel, distributed: ReferenceModel) -> None:
    assert sorted(local.species) == sorted(distributed.species)
    for name, ref in local.species.items():
        other = distributed.species[name]
        assert list(ref.lot_ids) == list(other.lot_ids)
        np.testing.assert_allclose(other.lot_z, ref.lot_z, rtol=0, atol=1e-6)
        np.testing.assert_allclose(other.calibration, ref.calibration, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(other.fold_sums, ref.fold_sums, rtol=1e-9, atol=1e-9)


def test_reference_build_on_ray_equals_the_single_process_build(local_ray: None) -> None:
    from grainproof.scale.ray_engine import RayRunner

    lots = WORLD.lots(500, seed=1)
    local = fit_reference_model(lots, seed=0)
    distributed = fit_reference_model(lots, seed=0, runner=RayRunner(actors=2))
    _same_model(local, distributed)
    assert distributed.version == local.version


def test_ray_actors_read_vector_files_chunk_by_chunk_like_the_local_build(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grainproof.scale.ray_engine import RayRunner

    lots = WORLD.lots(300, seed=2)
    table, in_memory = table_and_vectors(lots, None, None)
    path = tmp_path / "vectors.npy"
    np.save(path, in_memory.array.astype(np.float32))
    # Small chunks so each actor reads several parts of the file.
    monkeypatch.setattr("grainproof.reference.model.CHUNK_ROWS", 64)
    local = fit_reference_arrays(table, NpyVectors(path), seed=0)
    distributed = fit_reference_arrays(table, NpyVectors(path), seed=0, runner=RayRunner(actors=2))
    _same_model(local, distributed)
    assert distributed.version == local.version


@pytest.fixture(scope="module")
def photo_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated lots with two phone photos each (the lots.csv manifest)."""
    from grainproof.simulate import WorldConfig, simulate_world

    summary = simulate_world(
        WorldConfig(lots=2, photos_per_lot=2, seed=5, fraud_rate=0.0, species=("soft_wheat",)),
        tmp_path_factory.mktemp("ray-world") / "world",
    )
    return Path(summary.lots_csv)


def test_embed_command_on_ray_equals_the_single_process_embedding(
    local_ray: None, photo_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grainproof.cli import app
    from grainproof.embed import embed_manifest, get_embedder
    from grainproof.embed.batch import read_units, units_path
    from grainproof.manifest import read_manifest
    from grainproof.settings import Settings, get_settings

    local_out = embed_manifest(
        photo_world, tmp_path / "local.csv", embedder=get_embedder(settings=Settings(data_dir=tmp_path / "local"))
    ).path
    # Its own cache: the Ray run must compute its embeddings, not read the local run's.
    monkeypatch.setenv("GRAINPROOF_DATA_DIR", str(tmp_path / "ray"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["embed", str(photo_world), "--out", str(tmp_path / "ray.csv"), "--engine", "ray"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "ray" / "cache").rglob("*.npz"))  # the actors embedded (and cached) the photos
    local_lots, ray_lots = read_manifest(local_out), read_manifest(tmp_path / "ray.csv")
    assert [lot.lot_id for lot in local_lots] == [lot.lot_id for lot in ray_lots]
    for a, b in zip(local_lots, ray_lots, strict=True):
        np.testing.assert_allclose(np.asarray(b.features), np.asarray(a.features), rtol=1e-4, atol=1e-5)
        assert a.extra["backbone"] == b.extra["backbone"]
    local_units, ray_units = read_units(units_path(local_out)), read_units(units_path(tmp_path / "ray.csv"))
    assert sorted(local_units) == sorted(ray_units)
    for lot_id, units in local_units.items():
        np.testing.assert_allclose(ray_units[lot_id], units, rtol=1e-2, atol=1e-2)  # stored as float16


def test_reference_build_command_runs_on_ray(local_ray: None, tmp_path: Path) -> None:
    from grainproof.cli import app
    from grainproof.manifest import write_manifest

    manifest = tmp_path / "reference.csv"
    write_manifest(manifest, WORLD.lots(200, seed=4))
    runner = CliRunner()
    local = runner.invoke(app, ["reference", "build", str(manifest), "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    distributed = runner.invoke(
        app, ["reference", "build", str(manifest), "--out", str(tmp_path / "ray"), "--engine", "ray"]
    )
    assert distributed.exit_code == 0, distributed.output
    _same_model(ReferenceModel.load(tmp_path / "local"), ReferenceModel.load(tmp_path / "ray"))


def test_unknown_engine_is_a_clear_error() -> None:
    from grainproof.errors import GrainproofError
    from grainproof.scale.engines import chunk_runner

    with pytest.raises(GrainproofError, match="use local or ray"):
        chunk_runner("spark")
    with pytest.raises(GrainproofError, match="only used with --engine ray"):
        chunk_runner("local", "ray://head:10001")
