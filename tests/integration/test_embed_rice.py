"""Acceptance on real photos: our embeddings tell the five rice varieties apart (../shared/data/rice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

from grainproof.domain import with_measured_features
from grainproof.embed import get_embedder
from grainproof.measurement_layout import MEASURED_WITHOUT_CARD, MEASUREMENT_NAMES, measurement_strata
from grainproof.reference.space import block_scale, feature_blocks
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


def test_every_real_photo_is_measured_without_the_card(rice_embeddings: tuple[np.ndarray, list[str]]) -> None:
    vectors, _ = rice_embeddings
    strata = measurement_strata(vectors, len(MEASUREMENT_NAMES))
    assert (strata == MEASURED_WITHOUT_CARD).all(), f"{int((strata != MEASURED_WITHOUT_CARD).sum())} photos unmeasured"


def test_knn_tells_rice_varieties_apart_on_real_photos(rice_embeddings: tuple[np.ndarray, list[str]]) -> None:
    vectors, varieties = rice_embeddings
    assert vectors.shape == (400, len(MEASUREMENT_NAMES) + 1280) and len(set(varieties)) == 5
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    # The vectors as the reference space weighs them: standardised, each kernel measurement and the network's
    # block with the same total weight (feature_blocks).
    scale = block_scale(feature_blocks(with_measured_features("net", len(MEASUREMENT_NAMES)), vectors.shape[1]))
    weighted = make_pipeline(StandardScaler(), FunctionTransformer(lambda x: x / scale), KNeighborsClassifier(5))
    accuracy = cross_val_score(weighted, vectors, varieties, cv=folds).mean()
    assert accuracy >= 0.98, f"5-fold kNN variety accuracy {accuracy:.3f} < 0.98"
    # The network's features alone, as before the kernels were measured without the card.
    network = make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=5))
    accuracy = cross_val_score(network, vectors[:, len(MEASUREMENT_NAMES) :], varieties, cv=folds).mean()
    assert accuracy >= 0.93, f"5-fold kNN variety accuracy of the network's features {accuracy:.3f} < 0.93"


def test_real_single_kernel_photos_raise_no_quality_warning(rice_dir: Path, settings: Settings) -> None:
    embedder = get_embedder("efficientnet_lite0", settings=settings)
    photos = sorted(rice_dir.glob("*.jpg"))[::40]
    # These photos have no calibration card (they predate it): that warning is expected, no other.
    for photo in photos:
        warnings = embedder.prepare(photo.read_bytes(), photo.name).warnings
        assert [w for w in warnings if "calibration card" not in w] == [], warnings


def test_checking_a_single_kernel_photo_on_black_asks_only_for_the_card(rice_dir: Path) -> None:
    from grainproof.services.card import check_card_photo

    photo = sorted(rice_dir.glob("*.jpg"))[0]
    result = check_card_photo(photo.read_bytes(), photo.name)
    assert not result.card_found and result.kernels_measured
    assert len(result.fixes) == 1 and "card" in result.fixes[0]
    assert not any("tray" in fix and "again" in fix for fix in result.fixes), result.fixes
