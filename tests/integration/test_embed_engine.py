"""The embedding engine end to end with the packaged efficientnet_lite0 weights (loaded once per module)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grainproof.embed import embed_manifest, get_embedder, lot_embedding
from grainproof.embed.backbones import REGISTRY, _map_by_position, check_imagenet_classifier, load_backbone
from grainproof.embed.batch import read_units, units_path
from grainproof.embed.embedder import Embedder
from grainproof.errors import GrainproofError, PhotoError
from grainproof.manifest import feature_matrix, read_manifest
from grainproof.settings import Settings
from synthetic_trays import jpeg_bytes, tray_photo


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("embed-data"), torch_threads=2)


@pytest.fixture(scope="module")
def embedder(settings: Settings) -> Embedder:
    return get_embedder("efficientnet_lite0", settings=settings)


@pytest.fixture(scope="module")
def tray_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five synthetic tray photos, two of them portrait (to batch with landscape ones after turning)."""
    folder = tmp_path_factory.mktemp("trays")
    paths = []
    for seed in range(5):
        pixels = tray_photo(seed=seed, width=800, height=600)
        if seed % 2:
            pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2))
        path = folder / f"tray_{seed}.jpg"
        path.write_bytes(jpeg_bytes(pixels))
        paths.append(path)
    return paths


class CountingRunner:
    """Wraps a runner to count the canvases it is asked to embed."""

    def __init__(self, runner: object) -> None:
        self.runner = runner
        self.name = "counting"
        self.canvases = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.canvases += len(batch)
        return self.runner(batch)  # type: ignore[operator]


@pytest.fixture()
def counting(embedder: Embedder) -> Iterator[CountingRunner]:
    original = embedder.runner
    counter = CountingRunner(original)
    embedder.runner = counter
    yield counter
    embedder.runner = original


def test_backbone_id_names_the_weights(embedder: Embedder) -> None:
    assert embedder.backbone_id == "efficientnet_lite0@579344248a93+kernels:17"  # 17 kernel measurements lead
    assert embedder.dim == 17 + 1280


def test_wrongly_mapped_weights_fail_the_load_time_check() -> None:
    import timm

    with torch.random.fork_rng():  # random weights, but the same ones whatever ran before in this process
        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.eval()
    with pytest.raises(GrainproofError, match="fail the load-time check"):
        check_imagenet_classifier(model, REGISTRY["efficientnet_lite0"])
    shapes = {k: torch.zeros(v.shape) for k, v in model.state_dict().items()}
    keys = list(shapes)
    swapped = dict(shapes)
    swapped[keys[0]], swapped[keys[6]] = shapes[keys[6]], shapes[keys[0]]
    with pytest.raises(GrainproofError, match=r"(does|do) not belong"):
        _map_by_position(model, {k: swapped[k] for k in keys[:6]}, "short.pth")
    reordered = {keys[6]: shapes[keys[6]], **{k: v for k, v in shapes.items() if k != keys[6]}}
    with pytest.raises(GrainproofError, match="expects"):
        _map_by_position(model, reordered, "reordered.pth")


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(GrainproofError, match="Unknown backbone 'efficientnet_lite9'"):
        load_backbone("efficientnet_lite9")


def test_same_photo_same_vector_across_batch_sizes_and_orders(embedder: Embedder, tray_files: list[Path]) -> None:
    prepared = [embedder.prepare(p.read_bytes(), p.name) for p in tray_files]
    together = embedder.embed_prepared(prepared)
    alone = [embedder.embed_prepared([p])[0] for p in prepared]
    reversed_ = embedder.embed_prepared(prepared[::-1])[::-1]
    for a, b, c in zip(together, alone, reversed_, strict=True):
        assert np.abs(a.vector - b.vector).max() <= 1e-6
        assert np.abs(a.vector - c.vector).max() <= 1e-6
        assert np.abs(a.unit_vectors - b.unit_vectors).max() <= 1e-3  # half precision, by design


@pytest.mark.slow
def test_same_photo_same_vector_in_a_fresh_process(
    embedder: Embedder, tray_files: list[Path], settings: Settings
) -> None:
    here = embedder.embed_files(tray_files[:2], use_cache=False)
    script = (
        "import json,sys;from pathlib import Path;from grainproof.embed import get_embedder;"
        "from grainproof.settings import Settings;"
        f"e=get_embedder(settings=Settings(data_dir=Path({str(settings.data_dir)!r}),torch_threads=1));"
        "r=e.embed_files([Path(p) for p in sys.argv[1:]],use_cache=False);"
        "print(json.dumps([x.vector.tolist() for x in r]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, tray_files[:2])], capture_output=True, text=True, check=True
    )
    there = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]), dtype=np.float32)
    assert np.abs(np.stack([h.vector for h in here]) - there).max() <= 1e-6


@pytest.mark.parametrize("other", ["torch", "onnxruntime", "openvino", "openvino-bf16"])
def test_every_runtime_gives_the_same_vectors(tray_files: list[Path], settings: Settings, other: str) -> None:
    reference = get_embedder("efficientnet_lite0", settings=settings, runtime="torch").embed_files(
        tray_files[:2], use_cache=False
    )
    candidate = get_embedder("efficientnet_lite0", settings=settings, runtime=other).embed_files(
        tray_files[:2], use_cache=False
    )
    for x, y in zip(reference, candidate, strict=True):
        if other == "openvino-bf16":  # bfloat16 arithmetic: close, not equal
            assert float(x.vector @ y.vector / (np.linalg.norm(x.vector) * np.linalg.norm(y.vector))) >= 0.995
        else:
            assert np.abs(x.vector - y.vector).max() <= 1e-4, other


def test_nothing_is_embedded_twice(embedder: Embedder, tray_files: list[Path], counting: CountingRunner) -> None:
    duplicate = tray_files[0].with_name("copy_of_tray_0.jpg")
    duplicate.write_bytes(tray_files[0].read_bytes())
    first = embedder.embed_files([*tray_files, duplicate])
    assert counting.canvases <= len(tray_files)
    assert np.array_equal(first[0].vector, first[-1].vector)
    counting.canvases = 0
    again = embedder.embed_files(list(reversed(tray_files)))
    assert counting.canvases == 0
    assert np.array_equal(again[-1].vector, first[0].vector)
    assert np.array_equal(again[-1].unit_vectors, first[0].unit_vectors)


def test_a_cache_write_that_fails_is_raised_not_lost(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cache files are written by the photo pool while the network runs; a failed write must still surface.
    paths = []
    for seed in (40, 41, 42):
        path = tmp_path / f"fresh_{seed}.jpg"
        path.write_bytes(jpeg_bytes(tray_photo(seed=seed, width=640, height=480)))
        paths.append(path)
    written: list[str] = []

    def put(embedding: object) -> None:
        digest = getattr(embedding, "content_hash", "")
        if len(written) == 1:
            raise OSError(28, "No space left on device")
        written.append(digest)

    monkeypatch.setattr(embedder.cache, "put", put)
    with pytest.raises(OSError, match="No space left"):
        embedder.embed_files(paths)
    assert len(written) == 1


def test_embed_bytes_names_the_bad_upload(embedder: Embedder) -> None:
    with pytest.raises(PhotoError, match=r"upload_3\.jpg"):
        embedder.embed_bytes(b"GIF89a broken", "upload_3.jpg")


def test_blurry_photo_warning_reaches_the_lot(embedder: Embedder) -> None:
    from PIL import ImageFilter

    image = Image.fromarray((tray_photo(seed=11) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    sharp = embedder.embed_bytes(jpeg_bytes(tray_photo(seed=12)), "sharp.jpg")
    blurry = embedder.embed_bytes(buffer.getvalue(), "blurry.jpg")
    lot = lot_embedding([sharp, blurry])
    assert any("blurry.jpg" in w and "blurry" in w for w in lot.warnings)
    assert lot.unit_vectors.shape[1] == embedder.dim


def test_embed_manifest_adds_features_backbone_and_units(
    embedder: Embedder, tray_files: list[Path], tmp_path: Path
) -> None:
    folder = tray_files[0].parent
    manifest = folder / "lots.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lot_id", "species", "variety", "region", "harvest_date", "device", "photos", "field_id"])
        writer.writerow(["L1", "soft_wheat", "Apache", "51", "2024-07-20", "pixel-6a", "tray_0.jpg;tray_1.jpg", "F1"])
        writer.writerow(["L2", "soft_wheat", "Apache", "10", "2024-07-22", "iphone-11", "tray_2.jpg", "F2"])
    out = tmp_path / "elsewhere" / "embedded.csv"
    out.parent.mkdir()
    embed_manifest(manifest, out, embedder=embedder)
    lots = read_manifest(out)
    features = feature_matrix(lots)
    assert features.shape == (2, 17 + 1280)
    assert {lot.extra["backbone"] for lot in lots} == {embedder.backbone_id}
    assert lots[0].extra["field_id"] == "F1"
    units = read_units(units_path(out))
    assert set(units) == {"L1", "L2"} and units["L1"].shape[1] == 17 + 1280
    expected = lot_embedding(embedder.embed_files([folder / "tray_1.jpg", folder / "tray_0.jpg"]))
    assert np.allclose(features[0], expected.vector, atol=1e-6)


COMPILE = (
    "import sys\n"
    "from pathlib import Path\n"
    "import numpy as np\n"
    "from grainproof.embed.runtime import OpenVinoRunner\n"
    "runner = OpenVinoRunner(Path(sys.argv[1]), threads=1, bf16=True, compiled_dir=Path(sys.argv[2]))\n"
    "print(runner(np.zeros((1, 3, 224, 224), dtype=np.float32)).shape)\n"
)


@pytest.mark.slow
def test_processes_starting_together_share_one_compiled_network_cache(
    embedder: Embedder, settings: Settings, tmp_path: Path
) -> None:
    """Service workers and Ray actors start at once on a fresh cache: OpenVINO's cache writes are not safe
    between processes ("cannot set permissions: No such file"), so they take turns."""
    (onnx_path,) = (settings.embedding_cache_dir / "onnx").glob("*.onnx")
    compiled = tmp_path / "openvino"
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", COMPILE, str(onnx_path), str(compiled)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for start in starts:
        out, err = start.communicate(timeout=600)
        assert start.returncode == 0, err[-2000:]
        assert out.strip() == "(1, 1280, 7, 7)"
    assert list(compiled.glob("*.blob")), "the compiled network is kept for the next start"
