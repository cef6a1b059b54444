"""Vectors in database rows: numpy's .npy bytes (keeps dtype and shape, no pickle)."""

from __future__ import annotations

import io

import numpy as np


def encode_array(array: np.ndarray) -> bytes:
    """The array as .npy bytes (float64, any shape)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    """The array back from `encode_array` bytes."""
    return np.load(io.BytesIO(data), allow_pickle=False)
