"""Value/position codec for a flat float32 vector of activations: lossless by default.

Values are raw little-endian bytes of the storage dtype: float32 (the default: decode is
bit-identical), or float16 / bfloat16 when a user accepts rounding for half the bytes (each value
rounded to nearest, ties to even). A sparse vector keeps only its non-zero values and the gaps
between their positions, one byte each: a gap too long for a byte is bridged by filler entries of
gap 255 and value +0.0, which decode to the zero that was there anyway. Positions come from the
float32 input whatever the storage dtype, so they are the same in every dtype.
"""

import ml_dtypes
import numpy as np

from tfrecords import errors

SPARSE = "sparse"
DENSE = "dense"
ENCODINGS = (SPARSE, DENSE)
MAX_GAP = 255  # the largest gap one byte holds
SPARSE_AT_MOST = 0.5  # sparse where it at least halves the bytes (see choose_encoding)

FLOAT32 = "float32"
# How each storage dtype's values lie in a record: little-endian on every host. numpy has no
# bfloat16, so its values are held as their 16-bit patterns (converted with ml_dtypes, TensorFlow's
# own).
STORAGE_DTYPES = {FLOAT32: np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use {SPARSE!r} or {DENSE!r}")


def check_dtype(dtype: str) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {dtype!r}: use one of {', '.join(STORAGE_DTYPES)}")


def itemsize(dtype: str) -> int:
    """Bytes per stored value."""
    check_dtype(dtype)
    return STORAGE_DTYPES[dtype].itemsize


def _to_storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian float32 values rounded to the storage dtype, as STORAGE_DTYPES lays them
    out."""
    if dtype == FLOAT32:
        return values
    with np.errstate(over="ignore"):  # checked just below, with a message that says what to do
        rounded = values.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16)
    overflow = np.isfinite(values) & ~np.isfinite(rounded)
    if overflow.any():
        largest = float(np.abs(values[overflow]).max())
        raise errors.RecordsError(
            f"an activation of magnitude {largest:g} is beyond {dtype}'s range: store this node as "
            f"bfloat16 (float32's range) or float32"
        )
    if dtype == "bfloat16":
        rounded = rounded.view(np.uint16)
    return rounded.astype(STORAGE_DTYPES[dtype], copy=False)


def _from_storage(data: bytes, dtype: str) -> np.ndarray:
    """A record's values bytes as float32 (exact: every float16 and bfloat16 value is a float32
    value)."""
    stored = np.frombuffer(data, STORAGE_DTYPES[dtype])
    if dtype == "bfloat16":
        return stored.astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    return stored.astype(np.float32)


def _flat_float32(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise ValueError(
            f"expected a float32 array, got {array.dtype}: cast with .astype(np.float32) first"
        )
    return array.reshape(-1).astype("<f4", copy=False)  # C order, little-endian on every host


def encode(
    array: np.ndarray, encoding: str, dtype: str = FLOAT32
) -> tuple[np.ndarray, np.ndarray | None]:
    """Returns (values, gaps uint8): values.tobytes() is what a record stores; gaps is None for
    DENSE.

    values is in STORAGE_DTYPES[dtype]: float32 is bit-identical; float16 and bfloat16 are rounded
    to nearest, and a finite value beyond float16's range raises ValueError rather than becoming
    inf.
    """
    check_encoding(encoding)
    check_dtype(dtype)
    flat = _flat_float32(array)
    if encoding == DENSE:
        return _to_storage(flat, dtype), None
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
    return _to_storage(values, dtype), encoded_gaps


def decode(
    data: bytes, gaps: np.ndarray | None, size: int, encoding: str, dtype: str = FLOAT32
) -> np.ndarray:
    """Numpy reference decoder of a record's values bytes (or encode's values): the flat float32
    vector."""
    check_encoding(encoding)
    check_dtype(dtype)
    values = _from_storage(data.tobytes() if isinstance(data, np.ndarray) else data, dtype)
    if encoding == DENSE:
        if values.size != size:
            raise errors.RecordsError(
                f"dense record holds {values.size} values, expected {size}: check the node shape"
            )
        return values.copy()
    gaps = np.asarray(gaps)
    if gaps.shape != values.shape:
        raise errors.RecordsError(
            f"sparse record holds {values.size} values but {gaps.size} gaps: the record is corrupt"
        )
    positions = np.cumsum(gaps, dtype=np.int64)
    if positions.size and positions[-1] >= size:
        raise errors.RecordsError(
            f"sparse record has positions beyond {size}: check the node shape"
        )
    flat = np.zeros(size, dtype=np.float32)
    flat[positions] = values
    return flat


def encoded_nbytes(array: np.ndarray, encoding: str, dtype: str = FLOAT32) -> int:
    """Serialized payload: itemsize(dtype) bytes per value plus one per gap."""
    values, gaps = encode(array, encoding, dtype)
    return values.nbytes + (0 if gaps is None else gaps.size)


def choose_encoding(sample: np.ndarray, dtype: str = FLOAT32) -> str:
    """SPARSE for a sample of real activations that it stores in at most SPARSE_AT_MOST of DENSE's
    bytes.

    Bytes are not the only cost: the reader turns value/position pairs back into a dense tensor with
    a scan and a scatter, several times the work of copying dense values (measured on a batch of 100
    records of 11 x 1280 values: 4.6x at 60 % zeros, 15x at 27 %). A node that sparse storage
    shrinks only a little, such as MobileNetV2's `pool` (27 % zeros, 0.91x), then costs the trainer
    more to read than it saves, so it stays dense.
    """
    if encoded_nbytes(sample, SPARSE, dtype) <= SPARSE_AT_MOST * encoded_nbytes(
        sample, DENSE, dtype
    ):
        return SPARSE
    return DENSE
