"""The one tf.train.Example spec for a bottleneck record: serialize one image, parse a batch.

    image/id            bytes   the image's stable id (its path relative to the dataset)
    label               int64
    bottleneck/values   bytes   raw little-endian values in the node's storage dtype (the manifest's "dtype":
                                float32 by default, or float16 / bfloat16), all of them or the non-zero ones
    bottleneck/gaps     bytes   sparse only: one uint8 gap per value (see codec)

Parsing always yields float32, whatever the storage dtype.

Raw bytes rather than FloatList/Int64List: protobuf then only copies memory on both sides. Measured
on MobileNetV2 activations, serializing one record became 4x (sparse) to 15x (dense) faster than
with packed repeated fields, at the same size on disk.
"""

import math

import numpy as np
import tensorflow as tf

from tfrecords import codec

IMAGE_ID_KEY = "image/id"
LABEL_KEY = "label"
VALUES_KEY = "bottleneck/values"
GAPS_KEY = "bottleneck/gaps"
TF_DTYPES = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}  # codec.STORAGE_DTYPES's


def _bytes_feature(data: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))


def serialize(image_id: str, label: int, bottleneck: np.ndarray, encoding: str, dtype: str = codec.FLOAT32) -> bytes:
    """One image's record: all its branches at one node, flattened into one encoded vector."""
    values, gaps = codec.encode(bottleneck, encoding, dtype)
    feature = {
        IMAGE_ID_KEY: _bytes_feature(image_id.encode("utf-8")),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        VALUES_KEY: _bytes_feature(values.tobytes()),
    }
    if gaps is not None:
        feature[GAPS_KEY] = _bytes_feature(gaps.tobytes())
    # Features is a protobuf map, serialized in hash order unless asked otherwise: deterministic
    # output makes shards byte-identical across runs, so a resumed job equals an uninterrupted one.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _feature_spec(encoding: str) -> dict:
    spec = {
        IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        VALUES_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    if encoding == codec.SPARSE:
        spec[GAPS_KEY] = tf.io.FixedLenFeature([], tf.string)
    return spec


def _values_as_float32(data: tf.Tensor, dtype: str) -> tf.Tensor:
    """decode_raw of values bytes in the storage dtype, widened to float32 (exactly)."""
    return tf.cast(tf.io.decode_raw(data, TF_DTYPES[dtype], little_endian=True), tf.float32)


def _decode_dense(values: tf.Tensor, size: int, dtype: str) -> tf.Tensor:
    # DecodeRaw itself refuses records of different lengths within a batch.
    flat = _values_as_float32(values, dtype)
    check = tf.debugging.assert_equal(
        tf.shape(flat)[1], size, message=f"a dense record does not hold the {size} values of the node shape "
                                         f"it was read with")
    with tf.control_dependencies([check]):
        return tf.identity(flat)


def _decode_sparse(values: tf.Tensor, gaps: tf.Tensor, size: int, dtype: str) -> tf.Tensor:
    """A batch of value/gap byte strings -> dense [batch, size]."""
    value_lengths = tf.cast(tf.strings.length(values) // codec.itemsize(dtype), tf.int64)
    gap_lengths = tf.cast(tf.strings.length(gaps), tf.int64)
    check = tf.debugging.assert_equal(
        value_lengths, gap_lengths, message="a sparse record has different numbers of values and gaps")
    with tf.control_dependencies([check]):
        # One decode for the whole batch: concatenating the strings is a single copy.
        flat_values = _values_as_float32(tf.strings.reduce_join(values), dtype)
        flat_gaps = tf.cast(tf.io.decode_raw(tf.strings.reduce_join(gaps), tf.uint8), tf.int64)
    row_splits = tf.concat([[0], tf.cumsum(gap_lengths)], axis=0)
    row_ids = tf.ragged.row_splits_to_segment_ids(row_splits, out_type=tf.int64)
    # A cumulative sum over the whole batch, minus each row's starting total, is a per-row cumsum.
    running = tf.cumsum(flat_gaps)
    totals_before = tf.concat([[0], running], axis=0)
    positions = running - tf.gather(tf.gather(totals_before, row_splits[:-1]), row_ids)
    batch_size = tf.shape(values, out_type=tf.int64)[0]
    # SparseToDense assigns (so -0.0 survives, unlike a scatter that adds into zeros) and, with
    # validation on, rejects positions that are out of range or not increasing: a record read with
    # the wrong node shape fails here instead of decoding into garbage.
    flat = tf.raw_ops.SparseToDense(
        sparse_indices=row_ids * size + positions, output_shape=tf.reshape(batch_size * size, [1]),
        sparse_values=flat_values, default_value=tf.constant(0.0), validate_indices=True)
    check = tf.debugging.assert_less(positions, tf.constant(size, tf.int64), message=(
        f"a sparse record reaches beyond the {size} elements of the node shape it was read with"))
    with tf.control_dependencies([check]):
        return tf.reshape(flat, [batch_size, size])


def parse_batch(serialized: tf.Tensor, shape: tuple[int, ...], encoding: str, dtype: str = codec.FLOAT32) -> dict:
    """Parses a batch of serialized records into bottleneck [batch, *shape] float32, label and image_id."""
    codec.check_encoding(encoding)
    codec.check_dtype(dtype)
    shape = tuple(int(dimension) for dimension in shape)
    size = math.prod(shape)
    parsed = tf.io.parse_example(serialized, _feature_spec(encoding))
    if encoding == codec.DENSE:
        flat = _decode_dense(parsed[VALUES_KEY], size, dtype)
    else:
        flat = _decode_sparse(parsed[VALUES_KEY], parsed[GAPS_KEY], size, dtype)
    return {
        "bottleneck": tf.reshape(flat, [-1, *shape]),
        "label": parsed[LABEL_KEY],
        "image_id": parsed[IMAGE_ID_KEY],
    }
