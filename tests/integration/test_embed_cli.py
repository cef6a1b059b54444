"""`grainproof embed` and the embedding benchmarks, through the CLI and their service functions."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from grainproof.cli import app
from grainproof.embed.bench import bench_embed, separation
from grainproof.manifest import read_manifest
from grainproof.settings import Settings


def small_tray(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((300, 400, 3), 200, dtype=np.uint8)
    for _ in range(12):
        y, x = rng.integers(40, 260), rng.integers(40, 360)
        pixels[y - 8 : y + 8, x - 15 : x + 15] = (150, 100, 50)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    for seed in range(3):
        (tmp_path / "photos" / f"p{seed}.jpg").write_bytes(small_tray(seed))
    path = tmp_path / "lots.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lot_id", "species", "variety", "region", "device", "photos"])
        writer.writerow(["A", "barley", "Planet", "51", "pixel-6a", "photos/p0.jpg;photos/p1.jpg"])
        writer.writerow(["B", "barley", "Planet", "02", "moto-g22", "photos/p2.jpg"])
    return path


def test_embed_command_writes_features_and_says_where(manifest: Path, data_dir: Path) -> None:
    out = manifest.parent / "embedded.csv"
    result = CliRunner().invoke(app, ["embed", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "efficientnet_lite0@" in result.output
    lots = read_manifest(out)
    assert all(lot.features is not None and len(lot.features) == 17 + 1280 for lot in lots)
    assert (manifest.parent / "embedded.units.npz").is_file()
    assert (data_dir / "cache" / "embeddings").is_dir()


def test_embed_command_reports_a_broken_photo_by_name(manifest: Path, data_dir: Path) -> None:
    (manifest.parent / "photos" / "p2.jpg").write_bytes(b"not a jpeg")
    result = CliRunner().invoke(app, ["embed", str(manifest), "--out", str(manifest.parent / "e.csv")])
    assert result.exit_code != 0
    assert "p2.jpg" in str(result.exception)


@pytest.mark.slow
def test_bench_embed_measures_both_paths_on_the_same_vectors(tmp_path: Path) -> None:
    result = bench_embed(
        settings=Settings(data_dir=tmp_path, torch_threads=2), images=2, rounds=1, canvas=(224, 224), matmul_size=512
    )
    assert result.naive_images_per_s > 0 and result.ours_images_per_s > 0
    assert result.speedup == pytest.approx(result.ours_images_per_s / result.naive_images_per_s)
    assert result.min_cosine_to_naive >= 0.999
    assert 0.5 < result.gflops_per_image < 1.5  # efficientnet_lite0 at 224 px: about 0.8 GFLOP
    assert result.fraction_of_matmul_peak > 0


def test_separation_compares_regions_and_phones_within_a_variety_and_season() -> None:
    X = np.asarray([[0.0, 0], [0.0, 1], [10.0, 0], [10.0, 1], [50.0, 50]])
    regions = ["51", "51", "02", "02", "51"]
    devices = ["a", "b", "a", "b", "a"]
    groups = [("barley", "Planet", "2024")] * 4 + [("barley", "Other", "2024")]
    between, within = separation(X, regions, devices, groups)
    assert within == pytest.approx(1.0)
    assert between == pytest.approx(np.sqrt(101))  # different-phone pairs only: (a, b) across the two regions
