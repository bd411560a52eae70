"""The one tf.train.Example spec for a bottleneck record: serialize one image, parse a batch."""

import math

import numpy as np
import tensorflow as tf

from tfrecords import codec

IMAGE_ID_KEY = "image/id"
LABEL_KEY = "label"
VALUES_KEY = "bottleneck/values"
GAPS_KEY = "bottleneck/gaps"


def serialize(image_id: str, label: int, bottleneck: np.ndarray, encoding: str) -> bytes:
    """One image's record: all its branches at one node, flattened into one encoded vector."""
    values, gaps = codec.encode(bottleneck, encoding)
    # tolist() is several times faster than handing protobuf a numpy array, and exact for float32.
    feature = {
        IMAGE_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode("utf-8")])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        VALUES_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist())),
    }
    if gaps is not None:
        feature[GAPS_KEY] = tf.train.Feature(int64_list=tf.train.Int64List(value=gaps.tolist()))
    # Features is a protobuf map, serialized in hash order unless asked otherwise: deterministic
    # output makes shards byte-identical across runs, so a resumed job equals an uninterrupted one.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _feature_spec(size: int, encoding: str) -> dict:
    spec = {
        IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    if encoding == codec.DENSE:
        spec[VALUES_KEY] = tf.io.FixedLenFeature([size], tf.float32)
    else:
        spec[VALUES_KEY] = tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
        spec[GAPS_KEY] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
    return spec


def _scatter_sparse(values: tf.RaggedTensor, gaps: tf.RaggedTensor, size: int) -> tf.Tensor:
    """Decodes a batch of value/gap rows into a dense [batch, size] tensor."""
    row_splits = gaps.row_splits
    checks = [
        tf.debugging.assert_equal(
            values.row_splits, row_splits, message="a sparse record has different numbers of values and gaps"),
        tf.debugging.assert_non_negative(gaps.flat_values, message="a sparse record has a negative gap"),
    ]
    with tf.control_dependencies(checks):
        # A cumulative sum over the whole batch, minus each row's starting total, is a per-row cumsum.
        running = tf.cumsum(gaps.flat_values)
        totals_before = tf.concat([tf.zeros([1], tf.int64), running], axis=0)
        row_ids = gaps.value_rowids()
        positions = running - tf.gather(tf.gather(totals_before, row_splits[:-1]), row_ids)
    with tf.control_dependencies([tf.debugging.assert_less(
            positions, tf.constant(size, tf.int64),
            message=f"a sparse record reaches beyond the {size} elements of the node shape it was read with")]):
        batch_size = tf.shape(row_splits, out_type=tf.int64)[0] - 1
        flat_indices = row_ids * size + positions
        # An update, not scatter_nd's sum: 0.0 + -0.0 would turn a stored -0.0 into 0.0.
        flat = tf.tensor_scatter_nd_update(
            tf.zeros([batch_size * size], tf.float32), flat_indices[:, tf.newaxis], values.flat_values)
    return tf.reshape(flat, [batch_size, size])


def parse_batch(serialized: tf.Tensor, shape: tuple[int, ...], encoding: str) -> dict:
    """Parses a batch of serialized records into bottleneck [batch, *shape], label and image_id."""
    codec.check_encoding(encoding)
    shape = tuple(int(dimension) for dimension in shape)
    size = math.prod(shape)
    parsed = tf.io.parse_example(serialized, _feature_spec(size, encoding))
    if encoding == codec.DENSE:
        flat = parsed[VALUES_KEY]
    else:
        flat = _scatter_sparse(parsed[VALUES_KEY], parsed[GAPS_KEY], size)
    return {
        "bottleneck": tf.reshape(flat, [-1, *shape]),
        "label": parsed[LABEL_KEY],
        "image_id": parsed[IMAGE_ID_KEY],
    }
