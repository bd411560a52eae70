"""Tests the value/position codec: bit-identical round trips, small gaps, and the encoding
choice."""

import ml_dtypes
import numpy as np
import pytest

from tfrecords import codec


def _random_activations(shape, zero_fraction, seed=0):
    generator = np.random.default_rng(seed)
    array = generator.normal(size=shape).astype(np.float32)
    array[generator.random(shape) < zero_fraction] = 0.0
    return array


CASES = {
    "random_sparse": _random_activations((11, 5, 5, 8), 0.7),
    "random_dense": _random_activations((11, 16), 0.0),
    "all_zero": np.zeros((11, 3, 3, 2), np.float32),
    "no_zero": np.arange(1, 25, dtype=np.float32).reshape(2, 3, 4),
    "last_element_nonzero": np.array([0, 0, 0, 0, 7.5], np.float32),
    "first_element_nonzero": np.array([3.0, 0, 0, 0, 0], np.float32),
    "negative": -np.abs(_random_activations((4, 6), 0.5)),
    "negative_zero": np.array([0.0, -0.0, 1.0, -0.0, 0.0], np.float32),
    "nan_and_infinities": np.array([0, np.nan, 0, np.inf, -np.inf, 0, 1e-45], np.float32),
    "long_runs_of_zeros": np.eye(1, 2000, 1999, dtype=np.float32)[0]
    + np.eye(1, 2000, 255, dtype=np.float32)[0],
    "first_nonzero_far_away": np.eye(1, 1000, 765, dtype=np.float32)[0],
}


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
@pytest.mark.parametrize("name", CASES)
def test_round_trip_is_bit_identical(name, encoding):
    array = CASES[name]
    values, gaps = codec.encode(array, encoding)
    decoded = codec.decode(values, gaps, array.size, encoding)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded.view(np.uint32), array.reshape(-1).view(np.uint32))


def test_sparse_keeps_negative_zero_and_last_element_but_not_zeros():
    values, gaps = codec.encode(CASES["negative_zero"], codec.SPARSE)
    assert (
        values.view(np.uint32).tolist()
        == np.array([-0.0, 1.0, -0.0], np.float32).view(np.uint32).tolist()
    )
    assert gaps.tolist() == [1, 1, 1]
    values, gaps = codec.encode(CASES["last_element_nonzero"], codec.SPARSE)
    assert values.tolist() == [7.5] and gaps.tolist() == [4]


def test_dense_encoding_has_no_gaps_and_all_values():
    array = CASES["random_sparse"]
    values, gaps = codec.encode(array, codec.DENSE)
    assert gaps is None and values.size == array.size


def test_gaps_are_one_byte_and_long_gaps_are_bridged_by_zero_fillers():
    _, gaps = codec.encode(CASES["random_sparse"], codec.SPARSE)
    assert gaps.dtype == np.uint8
    array = np.zeros(2000, np.float32)
    array[[255, 256, 1999]] = [1.0, 2.0, 3.0]  # gaps 255, 1 and 1743 = 6 x 255 + 213
    values, gaps = codec.encode(array, codec.SPARSE)
    assert gaps.tolist() == [255, 1] + [255] * 6 + [213]
    assert values.tolist() == [1.0, 2.0] + [0.0] * 6 + [3.0]
    assert values[2:8].view(np.uint32).tolist() == [0] * 6  # +0.0, exactly what was there


def test_choose_encoding():
    assert codec.choose_encoding(_random_activations((8, 11, 4, 4, 16), 0.9)) == codec.SPARSE
    assert codec.choose_encoding(_random_activations((8, 11, 64), 0.0)) == codec.DENSE


def test_sparse_at_70_percent_zeros_is_under_45_percent_of_raw():
    array = _random_activations((11, 8, 8, 16), 0.7)
    assert codec.encoded_nbytes(array, codec.SPARSE) <= 0.45 * array.nbytes
    assert codec.encoded_nbytes(array, codec.DENSE) == array.nbytes


def test_encoded_nbytes_counts_values_gaps_and_fillers():
    array = np.zeros(20000, np.float32)
    array[[0, 127, 127 + 256, 127 + 256 + 16384]] = 1.0  # gaps 0, 127, 256 (one filler), 16384 (64)
    assert codec.encoded_nbytes(array, codec.SPARSE) == 5 * (4 + 1 + 64)


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="astype"):
        codec.encode(np.zeros(3, np.float64), codec.SPARSE)
    with pytest.raises(ValueError, match="use 'sparse' or 'dense'"):
        codec.encode(np.zeros(3, np.float32), "zip")
    with pytest.raises(ValueError, match="shape"):
        codec.decode(np.ones(2, np.float32), np.array([0, 5]), 4, codec.SPARSE)


REDUCED_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("dtype", REDUCED_DTYPES)
@pytest.mark.parametrize("encoding", codec.ENCODINGS)
@pytest.mark.parametrize("name", CASES)
def test_reduced_dtypes_round_to_nearest_and_keep_zeros_signs_and_specials(name, encoding, dtype):
    array = CASES[name]
    values, gaps = codec.encode(array, encoding, dtype)
    assert values.itemsize == codec.itemsize(dtype) == 2
    decoded = codec.decode(values.tobytes(), gaps, array.size, encoding, dtype)
    assert decoded.dtype == np.float32
    # The reference: the library's own round-to-nearest-even cast, widened back (exact).
    expected = array.reshape(-1).astype(REDUCED_DTYPES[dtype]).astype(np.float32)
    np.testing.assert_array_equal(decoded.view(np.uint32), expected.view(np.uint32))
    normal = np.isfinite(array.reshape(-1)) & (np.abs(array.reshape(-1)) > 1e-4)
    relative = np.abs(decoded[normal] - array.reshape(-1)[normal]) / np.abs(
        array.reshape(-1)[normal]
    )
    assert relative.max(initial=0) <= {"float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype]


@pytest.mark.parametrize("dtype", REDUCED_DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_reduced_dtypes_keep_the_float32_positions(name, dtype):
    _, float32_gaps = codec.encode(CASES[name], codec.SPARSE)
    _, gaps = codec.encode(CASES[name], codec.SPARSE, dtype)
    assert gaps.tolist() == float32_gaps.tolist()


def test_reduced_dtypes_store_half_the_value_bytes_little_endian():
    array = CASES["random_sparse"]
    assert codec.encoded_nbytes(array, codec.DENSE, "float16") == 2 * array.size
    float32_values, gaps = codec.encode(array, codec.SPARSE)
    assert (
        codec.encoded_nbytes(array, codec.SPARSE, "bfloat16") == 2 * float32_values.size + gaps.size
    )
    values, _ = codec.encode(np.array([1.0, -2.0], np.float32), codec.DENSE, "bfloat16")
    assert values.tobytes() == bytes(
        [0x80, 0x3F, 0x00, 0xC0]
    )  # 0x3f80 = 1.0, 0xc000 = -2.0, low byte first
    values, _ = codec.encode(np.array([1.0, -2.0], np.float32), codec.DENSE, "float16")
    assert values.tobytes() == bytes([0x00, 0x3C, 0x00, 0xC0])


def test_float32_stays_the_lossless_default():
    array = CASES["nan_and_infinities"]
    values, _ = codec.encode(array, codec.DENSE)
    assert values.dtype == np.dtype("<f4") and values.tobytes() == array.astype("<f4").tobytes()
    assert (
        codec.encode(array, codec.SPARSE)[0].tobytes()
        == codec.encode(array, codec.SPARSE, "float32")[0].tobytes()
    )


def test_float16_refuses_values_beyond_its_range_and_names_bfloat16():
    array = np.array([0.0, 70000.0, 1.0], np.float32)
    with pytest.raises(ValueError, match="70000 is beyond float16's range.*bfloat16"):
        codec.encode(array, codec.SPARSE, "float16")
    decoded = codec.decode(
        codec.encode(array, codec.DENSE, "bfloat16")[0], None, 3, codec.DENSE, "bfloat16"
    )
    assert decoded.tolist() == [
        0.0,
        70144.0,
        1.0,
    ]  # bfloat16 has float32's range, with 8 significant bits


def test_choose_encoding_weighs_the_dtypes_value_bytes():
    # 70 % zeros: sparse is 0.3 * (4 + 1) = 1.5 bytes per element against 4 in float32 (0.375x),
    # but 0.3 * (2 + 1) = 0.9 against 2 in float16 and bfloat16 (0.45x); 62 %: 0.475x and 0.57x.
    array = _random_activations((8, 11, 64), 0.7, seed=3)
    assert codec.choose_encoding(array) == codec.choose_encoding(array, "float16") == codec.SPARSE
    array = _random_activations((8, 11, 64), 0.62, seed=3)
    assert codec.choose_encoding(array) == codec.SPARSE
    assert (
        codec.choose_encoding(array, "float16")
        == codec.choose_encoding(array, "bfloat16")
        == codec.DENSE
    )


def test_choose_encoding_keeps_dense_where_sparse_saves_little():
    # MobileNetV2's pool: 27 % zeros, sparse 0.91x of dense, yet several times the decoding work.
    array = _random_activations((8, 11, 1280), 0.27, seed=4)
    assert codec.encoded_nbytes(array, codec.SPARSE) < codec.encoded_nbytes(array, codec.DENSE)
    assert codec.choose_encoding(array) == codec.DENSE
    array = _random_activations((8, 11, 1280), 0.58, seed=4)  # 0.525x
    assert codec.choose_encoding(array) == codec.DENSE


def test_unknown_storage_dtype_names_the_choices():
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        codec.encode(np.zeros(3, np.float32), codec.DENSE, "int8")
