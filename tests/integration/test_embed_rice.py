"""Acceptance on real photos: our embeddings tell the five rice varieties apart (../shared/data/rice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

from grainproof.embed import get_embedder
from grainproof.settings import Settings

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("rice-embed"), torch_threads=2)


@pytest.fixture(scope="module")
def rice_embeddings(rice_dir: Path, settings: Settings) -> tuple[np.ndarray, list[str]]:
    """All 400 rice photos embedded once for this module."""
    paths = sorted(rice_dir.glob("*.jpg"))
    embeddings = get_embedder("efficientnet_lite0", settings=settings).embed_files(paths)
    return np.stack([e.vector for e in embeddings]), [p.name.split("_")[0] for p in paths]


def test_knn_tells_rice_varieties_apart_on_real_photos(rice_embeddings: tuple[np.ndarray, list[str]]) -> None:
    vectors, varieties = rice_embeddings
    assert vectors.shape == (400, 8 + 1280) and len(set(varieties)) == 5
    knn = make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=5))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    accuracy = cross_val_score(knn, vectors, varieties, cv=folds).mean()
    assert accuracy >= 0.93, f"5-fold kNN variety accuracy {accuracy:.3f} < 0.93"


def test_real_single_kernel_photos_raise_no_quality_warning(rice_dir: Path, settings: Settings) -> None:
    embedder = get_embedder("efficientnet_lite0", settings=settings)
    photos = sorted(rice_dir.glob("*.jpg"))[::40]
    # These photos have no calibration card (they predate it): that warning is expected, no other.
    for photo in photos:
        warnings = embedder.prepare(photo.read_bytes(), photo.name).warnings
        assert [w for w in warnings if "calibration card" not in w] == [], warnings
