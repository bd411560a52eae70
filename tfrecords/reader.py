"""Builds the tf.data pipeline that reads one node's bottleneck records of one split."""

import contextlib

import tensorflow as tf

from tfrecords import codec
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import verify

# More parallel files than this gains little read throughput and costs one buffer each.
MAX_PARALLEL_FILES = 16


def dataset_size(records_dir: str, split: str) -> int:
    return manifest_lib.Manifest.read(records_dir).split(split).num_records


def make_dataset(records_dir: str, node: str, split: str, batch_size: int, *, shuffle: bool = False,
                 seed: int | None = None, repeat: bool = False, drop_remainder: bool = False,
                 branches: tuple[int, ...] | None = None, with_ids: bool = False,
                 shuffle_buffer: int = 1000, start_batch: int = 0, cache_decoded: bool = False,
                 file_shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Batches of (bottleneck [B, branches, *node_shape] float32, label [B] int32[, image_id [B] string]).

    Values stored as float16 or bfloat16 (the manifest's per-node "dtype") are widened to float32 here.

    `start_batch` resumes a seeded stream part-way: the records before it are read but not decoded,
    so a resumed training sees exactly the batches an uninterrupted one would have.
    `cache_decoded` decodes each record once and keeps the decoded split in memory for later epochs
    (for a split that fits in memory; then shuffling and resuming act on decoded examples).
    `file_shard=(n, i)` reads only shards i, i + n, i + 2n, ...: reader i's share when n readers split the
    files; seeding and `start_batch` then act on that share alone.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}: pass at least 1")
    manifest = manifest_lib.Manifest.read(records_dir)
    info = manifest.node(node)
    if info.dtype not in codec.STORAGE_DTYPES:
        raise ValueError(f"node {node!r} is stored as {info.dtype}, this reader reads "
                         f"{', '.join(codec.STORAGE_DTYPES)}: rerun make_tfrecords")
    shape = info.shape
    encoding = info.encoding
    dtype = info.dtype
    if branches is not None:
        branches = tuple(branches)
        if not branches or not all(0 <= branch < shape[0] for branch in branches):
            raise ValueError(f"branches {branches} must be a non-empty subset of 0..{shape[0] - 1}")
    paths = manifest.shard_paths(records_dir, node, split)
    if file_shard is not None:
        count, index = file_shard
        if not 0 <= index < count <= len(paths):
            raise ValueError(f"file_shard {file_shard} needs 0 <= index < readers <= the {len(paths)} shards of "
                             f"{node}/{split}")
        paths = paths[index::count]  # before the file shuffle: a seeded order of this reader's own files
    compression = manifest.compression

    files = tf.data.Dataset.from_tensor_slices(tf.constant(paths, dtype=tf.string))
    if shuffle:
        files = files.shuffle(max(1, len(paths)), seed=seed)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=max(1, min(len(paths), MAX_PARALLEL_FILES)),
        num_parallel_calls=tf.data.AUTOTUNE,
        # A seed asks for a reproducible order; otherwise let the fastest file go first.
        deterministic=not shuffle or seed is not None)

    def parse(serialized):
        parsed = example.parse_batch(serialized, shape, encoding, dtype)
        bottleneck = parsed["bottleneck"]
        if branches is not None:
            bottleneck = tf.gather(bottleneck, branches, axis=1)
        label = tf.cast(parsed["label"], tf.int32)
        return (bottleneck, label, parsed["image_id"]) if with_ids else (bottleneck, label)

    if cache_decoded:
        examples = records.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    else:
        examples = records  # still serialized: shuffled and skipped before the (costly) decoding
    if shuffle:
        examples = examples.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        examples = examples.repeat()
    if start_batch:
        examples = examples.skip(start_batch * batch_size)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    if not cache_decoded:
        batches = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


class DamagedRecords(RuntimeError):
    """A shard could not be read; the message names it and how to repair it."""


@contextlib.contextmanager
def explained_data_loss(records_dir: str, node: str, split: str):
    """Inside it, reading node/split that meets a damaged record raises DamagedRecords with one clear line."""
    try:
        yield
    except tf.errors.DataLossError as error:
        raise DamagedRecords(explain_data_loss(error, records_dir, node, split)) from None


def explain_data_loss(error: tf.errors.DataLossError, records_dir: str, node: str, split: str) -> str:
    """One line for a DataLossError met while reading node/split: which shard is damaged and how to fix it.

    TensorFlow's message gives a byte offset but not the file, so each shard of node/split is checked
    against its manifest entry (size, sha256, then every record's CRC).
    """
    fix = f"run `jpeg-ladder-verify {records_dir}` to list every bad shard, then {verify.rerun_advice(records_dir)}"
    try:
        report = verify.verify_records(records_dir, node, split)
    except (OSError, ValueError) as problem:
        return f"damaged records in {records_dir} ({error.message}), and its manifest cannot be read ({problem}); {fix}"
    if report.bad:
        named = ", ".join(f"{fileio.join(records_dir, shard.path)} ({shard.reason})" for shard in report.bad)
        return f"damaged shard {named}; {fix}"
    return (f"reading {node}/{split} in {records_dir} failed ({error.message}), yet every shard matches the manifest "
            f"(a disk or network read error?); {fix}")
