"""The pieces of batch embedding that need no network: warnings counted by kind, and the bounded photo pipeline."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from grainproof.embed.batch import count_warnings, warning_kind
from grainproof.embed.embedder import _ordered_map
from grainproof.embed.vectors import PhotoEmbedding
from grainproof.errors import PhotoError


def _photo(*warnings: str) -> PhotoEmbedding:
    return PhotoEmbedding(
        vector=np.zeros(3, dtype=np.float32),
        unit_vectors=np.zeros((1, 3), dtype=np.float32),
        content_hash="h",
        warnings=warnings,
    )


def test_warning_kind_leaves_out_the_photo_name_and_the_figures() -> None:
    assert warning_kind("photos/a.jpg: photo is too dark; retake it.") == "photo is too dark; retake it."
    assert warning_kind("measured kernels are 1.2 mm long, which no cereal grain is") == (
        "measured kernels are … mm long, which no cereal grain is"
    )
    assert warning_kind("too few separate kernels to measure; spread the sample.") == (
        "too few separate kernels to measure; spread the sample."
    )


def test_warnings_are_counted_once_per_photo_and_kind_most_frequent_first() -> None:
    counted = count_warnings(
        [
            ("a.jpg", _photo("a.jpg: no calibration card found.", "measured kernels are 1.2 mm long")),
            ("b.jpg", _photo("b.jpg: no calibration card found.", "measured kernels are 30.5 mm long")),
            ("c.jpg", _photo("c.jpg: no calibration card found.", "c.jpg: no calibration card found.")),
            ("d.jpg", _photo()),
        ]
    )
    assert [(c.warning, c.photos, c.example) for c in counted] == [
        ("no calibration card found.", 3, "a.jpg"),
        ("measured kernels are … mm long", 2, "a.jpg"),
    ]


def test_photo_pipeline_keeps_order_and_a_bounded_number_in_flight() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def work(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return item * item

    submitted: list[int] = []

    def items() -> object:
        for i in range(60):
            submitted.append(i)
            yield i

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = []
        for result in _ordered_map(pool, work, items(), ahead=5):  # type: ignore[arg-type]
            results.append(result)
            assert len(submitted) - len(results) <= 5, "never more than `ahead` photos prepared ahead"
    assert results == [i * i for i in range(60)]
    assert most <= 4


def test_photo_pipeline_raises_the_first_failure_in_order_and_drops_the_rest() -> None:
    done: list[int] = []

    def work(item: int) -> int:
        if item == 3:
            raise PhotoError("photo 3 is not a readable image")
        time.sleep(0.01)
        done.append(item)
        return item

    with ThreadPoolExecutor(max_workers=2) as pool:
        seen = []
        with pytest.raises(PhotoError, match="photo 3"):
            for result in _ordered_map(pool, work, range(100), ahead=4):
                seen.append(result)
    assert seen == [0, 1, 2]
    assert len(done) < 20, "photos queued after the failure are not prepared"
