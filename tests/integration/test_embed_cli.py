"""`grainproof embed` and the embedding benchmarks, through the CLI and their service functions."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
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


def test_embed_summarises_warnings_one_line_per_kind(manifest: Path, data_dir: Path) -> None:
    """Three photos without the calibration card: one line saying so for 3 photos, not three lines."""
    out = manifest.parent / "embedded.csv"
    result = CliRunner().invoke(app, ["embed", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card_lines = [line for line in result.stdout.splitlines() if "no calibration card found" in line]
    assert len(card_lines) == 1 and card_lines[0].split("│")[1].strip() == "3"
    assert "photos/p" not in card_lines[0].split("│")[2], "the kind of warning, without the photo's name"
    printed = CliRunner().invoke(app, ["embed", str(manifest), "--out", str(out), "--json"])
    assert printed.exit_code == 0, printed.output
    summary = json.loads(printed.stdout)
    assert summary["lots"] == 2 and summary["photos"] == 3 and summary["path"] == str(out)
    card = next(w for w in summary["warnings"] if w["warning"].startswith("no calibration card found"))
    assert card["photos"] == 3 and card["example"] == "photos/p0.jpg"


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


WARM_START = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from grainproof.embed import get_embedder\n"
    "from grainproof.settings import Settings\n"
    "embedder = get_embedder(settings=Settings(data_dir=Path(sys.argv[1]), torch_threads=2))\n"
    "(photo,) = embedder.embed_files([Path(sys.argv[2])], use_cache=False)\n"
    "print(json.dumps({'torch': 'torch' in sys.modules, 'vector': photo.vector.tolist()}))\n"
)


@pytest.mark.slow
def test_a_second_start_neither_imports_torch_nor_compiles_and_gives_the_same_vector(tmp_path: Path) -> None:
    photo = tmp_path / "tray.jpg"
    photo.write_bytes(small_tray(0))
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", WARM_START, str(tmp_path / "data"), str(photo)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[0]["torch"], "the first start loads the network: it checks it, exports and compiles it"
    assert not runs[1]["torch"], "the second start reads the check, the export and the compiled network from the cache"
    assert runs[0]["vector"] == runs[1]["vector"]
    cache = tmp_path / "data" / "cache"
    assert [p.name for p in (cache / "checked-weights").iterdir()] == [
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db.json"
    ]
    assert any((cache / "openvino").iterdir()), "OpenVINO's compiled network is kept in the cache dir"


@pytest.mark.slow
def test_whole_process_bench_times_the_loop_and_ours_on_the_same_photos(tmp_path: Path) -> None:
    from grainproof.embed.bench import bench_embed_process

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(2):
        (photos / f"p{seed}.jpg").write_bytes(small_tray(seed))
    (photos / "notes.txt").write_text("not a photo")
    result = bench_embed_process(photos, settings=Settings(data_dir=tmp_path / "data", torch_threads=2))
    assert result.photos == 2 and result.rounds == 1
    assert min(result.naive_s, result.ours_cold_s, result.ours_warm_s) > 0
    assert result.speedup_warm == pytest.approx(result.naive_s / result.ours_warm_s)
    assert result.speedup_cold == pytest.approx(result.naive_s / result.ours_cold_s)
    assert not (tmp_path / "data").exists(), "both sides ran in a scratch cache, not the user's"
