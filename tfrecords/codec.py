"""Lossless value/position codec for a flat float32 vector of activations."""

import numpy as np

SPARSE = "sparse"
DENSE = "dense"
ENCODINGS = (SPARSE, DENSE)

# A non-negative varint takes k+1 bytes once it reaches 2**(7k).
_VARINT_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 9)], dtype=np.int64)


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use {SPARSE!r} or {DENSE!r}")


def _flat_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise ValueError(f"expected a float32 array, got {array.dtype}: cast with .astype(np.float32) first")
    return array.reshape(-1)  # C order


def encode(array: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns (values, gaps); gaps is None for DENSE, else the int64 distances between stored positions."""
    check_encoding(encoding)
    flat = _flat_float32(array)
    if encoding == DENSE:
        return flat, None
    # Compare bit patterns, not values, so -0.0 is stored and decode is bit-identical.
    positions = np.flatnonzero(flat.view(np.uint32))
    # Gaps rather than positions keep every varint small, typically one byte.
    gaps = np.diff(positions, prepend=0).astype(np.int64)
    return flat[positions], gaps


def decode(values: np.ndarray, gaps: np.ndarray | None, size: int, encoding: str) -> np.ndarray:
    """Numpy reference decoder: the flat float32 vector of length size."""
    check_encoding(encoding)
    values = np.asarray(values, dtype=np.float32)
    if encoding == DENSE:
        if values.size != size:
            raise ValueError(f"dense record holds {values.size} values, expected {size}: check the node shape")
        return values.copy()
    gaps = np.asarray(gaps, dtype=np.int64)
    if gaps.shape != values.shape:
        raise ValueError(f"sparse record holds {values.size} values but {gaps.size} gaps: the record is corrupt")
    positions = np.cumsum(gaps)
    if positions.size and (gaps.min() < 0 or positions[-1] >= size):
        raise ValueError(f"sparse record has positions outside [0, {size}): check the node shape")
    flat = np.zeros(size, dtype=np.float32)
    flat[positions] = values
    return flat


def encoded_nbytes(array: np.ndarray, encoding: str) -> int:
    """Estimated serialized payload: 4 bytes per value plus one varint per gap."""
    values, gaps = encode(array, encoding)
    gap_bytes = 0 if gaps is None else int(np.sum(np.searchsorted(_VARINT_THRESHOLDS, gaps, side="right") + 1))
    return 4 * values.size + gap_bytes


def choose_encoding(sample: np.ndarray) -> str:
    """The smaller encoding for a sample of real activations; DENSE on a tie."""
    if encoded_nbytes(sample, SPARSE) < encoded_nbytes(sample, DENSE):
        return SPARSE
    return DENSE
