"""Lossless value/position codec for a flat float32 vector of activations.

Values are raw little-endian float32 bytes. A sparse vector keeps only its non-zero values and the
gaps between their positions, one byte each: a gap too long for a byte is bridged by filler
entries of gap 255 and value +0.0, which decode to the zero that was there anyway.
"""

import numpy as np

SPARSE = "sparse"
DENSE = "dense"
ENCODINGS = (SPARSE, DENSE)
MAX_GAP = 255  # the largest gap one byte holds


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use {SPARSE!r} or {DENSE!r}")


def _flat_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise ValueError(f"expected a float32 array, got {array.dtype}: cast with .astype(np.float32) first")
    return array.reshape(-1).astype("<f4", copy=False)  # C order, little-endian on every host


def encode(array: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns (values float32, gaps uint8); gaps is None for DENSE."""
    check_encoding(encoding)
    flat = _flat_float32(array)
    if encoding == DENSE:
        return flat, None
    # Compare bit patterns, not values, so -0.0 is stored and decode is bit-identical.
    positions = np.flatnonzero(flat.view(np.uint32))
    gaps = np.diff(positions, prepend=0)
    fillers = np.where(gaps > MAX_GAP, (gaps - 1) // MAX_GAP, 0)
    slots = np.cumsum(fillers + 1) - 1  # where each real entry lands after its fillers
    total = int(slots[-1]) + 1 if slots.size else 0
    values = np.zeros(total, "<f4")
    encoded_gaps = np.full(total, MAX_GAP, np.uint8)
    values[slots] = flat[positions]
    encoded_gaps[slots] = gaps - MAX_GAP * fillers
    return values, encoded_gaps


def decode(values: np.ndarray, gaps: np.ndarray | None, size: int, encoding: str) -> np.ndarray:
    """Numpy reference decoder: the flat float32 vector of length size."""
    check_encoding(encoding)
    values = np.asarray(values, dtype=np.float32)
    if encoding == DENSE:
        if values.size != size:
            raise ValueError(f"dense record holds {values.size} values, expected {size}: check the node shape")
        return values.copy()
    gaps = np.asarray(gaps)
    if gaps.shape != values.shape:
        raise ValueError(f"sparse record holds {values.size} values but {gaps.size} gaps: the record is corrupt")
    positions = np.cumsum(gaps, dtype=np.int64)
    if positions.size and positions[-1] >= size:
        raise ValueError(f"sparse record has positions beyond {size}: check the node shape")
    flat = np.zeros(size, dtype=np.float32)
    flat[positions] = values
    return flat


def encoded_nbytes(array: np.ndarray, encoding: str) -> int:
    """Serialized payload: 4 bytes per value plus one per gap."""
    values, gaps = encode(array, encoding)
    return 4 * values.size + (0 if gaps is None else gaps.size)


def choose_encoding(sample: np.ndarray) -> str:
    """The smaller encoding for a sample of real activations; DENSE on a tie."""
    if encoded_nbytes(sample, SPARSE) < encoded_nbytes(sample, DENSE):
        return SPARSE
    return DENSE
