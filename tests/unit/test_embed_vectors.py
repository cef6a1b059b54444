"""Lot embeddings from photo embeddings, and the on-disk embedding cache (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grainproof.embed.cache import EmbeddingCache
from grainproof.embed.vectors import PhotoEmbedding, lot_embedding


def photo(seed: int, *, dim: int = 8, units: int = 5, warnings: tuple[str, ...] = ()) -> PhotoEmbedding:
    rng = np.random.default_rng(seed)
    return PhotoEmbedding(
        vector=rng.normal(size=dim).astype(np.float32),
        unit_vectors=rng.normal(size=(units, dim)).astype(np.float32),
        content_hash=f"{seed:064x}",
        warnings=warnings,
        backbone_id="efficientnet_lite0@test",
    )


@given(st.permutations(list(range(6))))
def test_lot_embedding_does_not_depend_on_photo_order(order: list[int]) -> None:
    photos = [photo(i, warnings=(f"p{i}: dark",) if i % 2 else ()) for i in range(6)]
    reference = lot_embedding(photos, max_units=16)
    shuffled = lot_embedding([photos[i] for i in order], max_units=16)
    assert np.array_equal(reference.vector, shuffled.vector)
    assert np.array_equal(reference.unit_vectors, shuffled.unit_vectors)
    assert reference.warnings == shuffled.warnings


def test_lot_vector_is_the_mean_of_photo_vectors_and_units_are_capped() -> None:
    photos = [photo(i, units=30) for i in range(4)]
    lot = lot_embedding(photos, max_units=64)
    assert np.allclose(lot.vector, np.mean([p.vector for p in photos], axis=0), atol=1e-6)
    assert lot.unit_vectors.shape == (64, 8)


def test_photos_from_different_backbones_are_never_mixed() -> None:
    other = PhotoEmbedding(
        vector=np.zeros(8, dtype=np.float32),
        unit_vectors=np.zeros((1, 8), dtype=np.float32),
        content_hash="f" * 64,
        backbone_id="efficientnet_lite2@other",
    )
    with pytest.raises(ValueError, match="different backbones"):
        lot_embedding([photo(1), other])


def test_photo_embedding_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="unit_vectors"):
        PhotoEmbedding(vector=np.zeros(8), unit_vectors=np.zeros((2, 7)), content_hash="0" * 64)
    with pytest.raises(ValueError, match="NaN"):
        PhotoEmbedding(vector=np.full(3, np.nan), unit_vectors=np.zeros((1, 3)), content_hash="0" * 64)


def test_cache_round_trips_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, backbone_id="efficientnet_lite0@abc", preprocess_version="tray-v1")
    original = photo(3, warnings=("p3.jpg: photo looks blurry",))
    original = PhotoEmbedding(
        vector=original.vector,
        unit_vectors=original.unit_vectors.astype(np.float16).astype(np.float32),
        content_hash=original.content_hash,
        warnings=original.warnings,
        backbone_id="efficientnet_lite0@abc",
    )
    assert cache.get(original.content_hash) is None
    cache.put(original)
    loaded = cache.get(original.content_hash)
    assert loaded is not None
    assert np.array_equal(loaded.vector, original.vector)
    assert np.array_equal(loaded.unit_vectors, original.unit_vectors)
    assert loaded.warnings == original.warnings
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_cache_is_keyed_by_backbone_and_preprocessing(tmp_path: Path) -> None:
    entry = photo(4)
    EmbeddingCache(tmp_path, backbone_id="efficientnet_lite0@abc", preprocess_version="tray-v1").put(entry)
    assert (
        EmbeddingCache(tmp_path, backbone_id="efficientnet_lite1@def", preprocess_version="tray-v1").get(
            entry.content_hash
        )
        is None
    )
    assert (
        EmbeddingCache(tmp_path, backbone_id="efficientnet_lite0@abc", preprocess_version="tray-v2").get(
            entry.content_hash
        )
        is None
    )


def test_unreadable_cache_entry_is_treated_as_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, backbone_id="b@1", preprocess_version="v")
    entry = photo(5)
    cache.put(entry)
    next(tmp_path.rglob("*.npz")).write_bytes(b"half a file")
    assert cache.get(entry.content_hash) is None
