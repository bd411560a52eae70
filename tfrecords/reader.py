"""Builds the tf.data pipeline that reads one node's bottleneck records of one split (or several
nodes' records of the same images, aligned)."""

import contextlib
import math

import tensorflow as tf

from tfrecords import codec
from tfrecords import errors
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import verify

# More parallel files than this gains little read throughput and costs one buffer each.
MAX_PARALLEL_FILES = 16
# A local shard is read unbuffered, straight into each record: TFRecordDataset's default 256 KiB
# buffer adds one copy of every byte read. Measured on MobileNetV2 block_16_project_BN records (674
# KiB each), reading and parsing a batch of 100 took 8-18 % less CPU. Remote filesystems keep
# TensorFlow's buffer, which batches their small reads of record headers into fewer requests.
LOCAL_READ_BUFFER_BYTES = 0


# Reading records allocates and frees several large buffers per record (read, batch, parse, decode).
# Under glibc's malloc each comes from a fresh mmap whose pages the kernel zeroes; tcmalloc and
# jemalloc reuse them. Measured on block_16_project_BN records, LD_PRELOAD of tcmalloc took 40 % off
# the CPU time of reading and parsing a batch. TensorFlow's own performance guide recommends it.
FAST_ALLOCATORS = ("tcmalloc", "jemalloc")


def loaded_allocator(maps_path: str = "/proc/self/maps") -> str | None:
    """tcmalloc or jemalloc when this process has one loaded, "malloc" otherwise, None where
    unknowable."""
    try:
        with open(maps_path) as maps:
            libraries = maps.read()
    except OSError:  # not Linux
        return None
    return next((name for name in FAST_ALLOCATORS if f"lib{name}" in libraries), "malloc")


def _splits(split) -> tuple[str, ...]:
    return (split,) if isinstance(split, str) else tuple(split)


def _nodes(node) -> tuple[str, ...]:
    return (node,) if isinstance(node, str) else tuple(node)


def in_fold(image_ids: tf.Tensor, fold: tuple[int, int, bool]) -> tf.Tensor:
    """Whether each image belongs to the records that `fold` = (K, i, keep) selects: with keep,
    only fold i of K; without, every fold but i. Folds come from a stable hash of the image id (the
    same on every machine and run), so every reader of the same records agrees on them."""
    count, index, keep = fold
    inside = tf.equal(tf.strings.to_hash_bucket_fast(image_ids, count), index)
    return inside if keep else tf.logical_not(inside)


def shuffle_records(
    manifest: manifest_lib.Manifest,
    node: str,
    split,
    buffer_records: int,
    buffer_bytes: float | None,
    *,
    decoded_bytes: int | None = None,
) -> int:
    """How many examples a shuffle buffer of at most buffer_records and buffer_bytes holds.

    The buffer holds serialized records (their mean size in the manifest; of every node, for
    several), or decoded examples of decoded_bytes each when the split is decoded once and cached.
    At ImageNet size a record of a deep node is about a megabyte, so a fixed count of records alone
    could ask for tens of gigabytes.
    """
    if buffer_bytes is None:
        return max(1, buffer_records)
    if decoded_bytes is None:
        shards = [shard for name in _splits(split) for shard in manifest.split(name).shards]
        decoded_bytes = 0.0
        for one in _nodes(node):
            stored = sum(shard.files[one].num_bytes for shard in shards if one in shard.files)
            records = sum(shard.num_records for shard in shards if one in shard.files)
            decoded_bytes += stored / max(1, records)
    return max(1, min(buffer_records, int(buffer_bytes // max(1.0, decoded_bytes))))


def make_dataset(
    manifest: manifest_lib.Manifest,
    node: str,
    split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    branches: tuple[int, ...] | None = None,
    with_ids: bool = False,
    shuffle_buffer: int = 1000,
    shuffle_buffer_bytes: float | None = None,
    start_batch: int = 0,
    cache_decoded: bool = False,
    file_shard: tuple[int, int] | None = None,
    fold: tuple[int, int, bool] | None = None,
) -> tf.data.Dataset:
    """Batches of (bottleneck [B, branches, *node_shape] float32, label [B] int32[, image_id [B]
    string]) of the records that `manifest` (as read from their directory) describes.

    `node` may name several nodes: the bottleneck is then {node: [B, branches, *node_shape]}, each
    image's records of every node read side by side (shard i of every node holds the same images in
    the same order; the image ids are checked to agree).

    Values stored as float16 or bfloat16 (the manifest's per-node "dtype") are widened to float32
    here.

    `start_batch` resumes a seeded stream part-way: the records before it are read but not decoded,
    so a resumed training sees exactly the batches an uninterrupted one would have.
    The shuffle buffer holds at most `shuffle_buffer` examples and, when given,
    `shuffle_buffer_bytes` bytes of them (see shuffle_records).
    `cache_decoded` decodes each record once and keeps the decoded split in memory for later epochs
    (for a split that fits in memory; then shuffling and resuming act on decoded examples).
    `file_shard=(n, i)` reads only shards i, i + n, i + 2n, ...: reader i's share when n readers
    split the files; seeding and `start_batch` then act on that share alone.
    `split` may name several splits, read as one (e.g. train and validation for a refit); `fold`
    keeps the images of one fold of them, or all but one (see in_fold).
    """
    if not isinstance(manifest, manifest_lib.Manifest):
        # A job reads manifest.json once and passes the Manifest down; a folder here would be read
        # again for every dataset made.
        raise TypeError(
            f"make_dataset takes the records' Manifest, not {manifest!r}: pass "
            f"tfrecords.manifest.Manifest.read({str(manifest)!r})"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}: pass at least 1")
    nodes = _nodes(node)
    infos = {one: manifest.node(one) for one in nodes}
    for one, info in infos.items():
        if info.dtype not in codec.STORAGE_DTYPES:
            raise errors.RecordsError(
                f"node {one!r} is stored as {info.dtype}, this reader reads "
                f"{', '.join(codec.STORAGE_DTYPES)}: rerun make_tfrecords"
            )
    num_branches = infos[nodes[0]].shape[0]
    if branches is not None:
        branches = tuple(branches)
        if not branches or not all(0 <= branch < num_branches for branch in branches):
            raise errors.RecordsError(
                f"branches {branches} must be a non-empty subset of 0..{num_branches - 1}"
            )
    # One row per shard: its file of every node.
    paths = list(
        zip(
            *(
                [path for name in _splits(split) for path in manifest.shard_paths(one, name)]
                for one in nodes
            )
        )
    )
    if file_shard is not None:
        count, index = file_shard
        if not 0 <= index < count <= len(paths):
            raise errors.RecordsError(
                f"file_shard {file_shard} needs 0 <= index < readers <= the {len(paths)} shards of "
                f"{'+'.join(nodes)}/{split}"
            )
        paths = paths[
            index::count
        ]  # before the file shuffle: a seeded order of this reader's own files
    compression = manifest.compression

    files = tf.data.Dataset.from_tensor_slices(
        tf.constant(paths, dtype=tf.string, shape=(len(paths), len(nodes)))
    )
    if shuffle:
        files = files.shuffle(max(1, len(paths)), seed=seed)
    read_buffer = None if paths and fileio.is_remote(paths[0][0]) else LOCAL_READ_BUFFER_BYTES

    def read(row):
        per_node = tuple(
            tf.data.TFRecordDataset(
                row[position], compression_type=compression, buffer_size=read_buffer
            )
            for position in range(len(nodes))
        )
        return per_node[0] if len(nodes) == 1 else tf.data.Dataset.zip(per_node)

    records = files.interleave(
        read,
        cycle_length=max(1, min(len(paths), MAX_PARALLEL_FILES)),
        num_parallel_calls=tf.data.AUTOTUNE,
        # A seed asks for a reproducible order; otherwise let the fastest file go first.
        deterministic=not shuffle or seed is not None,
    )

    def parse(*serialized):
        parsed = [
            example.parse_batch(one, infos[name].shape, infos[name].encoding, infos[name].dtype)
            for one, name in zip(serialized, nodes)
        ]
        image_id = parsed[0]["image_id"]
        checks = [
            tf.debugging.assert_equal(
                other["image_id"],
                image_id,
                message=f"the records of nodes {', '.join(nodes)} are not aligned: rerun "
                "make_tfrecords",
            )
            for other in parsed[1:]
        ]
        with tf.control_dependencies(checks):
            bottlenecks = {}
            for name, one in zip(nodes, parsed):
                bottleneck = one["bottleneck"]
                if branches is not None:
                    bottleneck = tf.gather(bottleneck, branches, axis=1)
                bottlenecks[name] = tf.identity(bottleneck)
        bottleneck = bottlenecks[nodes[0]] if len(nodes) == 1 else bottlenecks
        label = tf.cast(parsed[0]["label"], tf.int32)
        return (bottleneck, label, image_id) if with_ids else (bottleneck, label)

    if fold is not None:
        records = records.filter(
            lambda *serialized: in_fold(example.image_id_of(serialized[0]), fold)
        )
    if cache_decoded:
        examples = (
            records.batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
        )
    else:
        examples = records  # still serialized: shuffled and skipped before the (costly) decoding
    if shuffle:
        decoded_bytes = (
            4
            * sum(math.prod(info.shape[1:]) for info in infos.values())
            * len(branches or range(num_branches))
            if cache_decoded
            else None
        )
        examples = examples.shuffle(
            shuffle_records(
                manifest,
                nodes,
                split,
                shuffle_buffer,
                shuffle_buffer_bytes,
                decoded_bytes=decoded_bytes,
            ),
            seed=seed,
        )
    if repeat:
        examples = examples.repeat()
    if start_batch:
        examples = examples.skip(start_batch * batch_size)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    if not cache_decoded:
        batches = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.prefetch(tf.data.AUTOTUNE)


class DamagedRecords(errors.RecordsError):
    """A shard could not be read; the message names it and how to repair it."""


@contextlib.contextmanager
def explained_data_loss(records_dir: str, node, split):
    """Inside it, reading node/split (node: one, or several) that meets a damaged record raises
    DamagedRecords with one clear line."""
    try:
        yield
    except tf.errors.DataLossError as error:
        raise DamagedRecords(explain_data_loss(error, records_dir, node, split)) from None


def explain_data_loss(error: tf.errors.DataLossError, records_dir: str, node, split) -> str:
    """One line for a DataLossError met while reading node/split (node: one, or several, whose
    shards are then all checked): which shard is damaged and how to fix it.

    TensorFlow's message gives a byte offset but not the file, so each shard of node/split is
    checked against its manifest entry (size, sha256, then every record's CRC).
    """
    nodes = _nodes(node)
    node = nodes[0] if len(nodes) == 1 else None
    fix = (
        f"run `jpeg-ladder-verify {records_dir}` to list every bad shard, then "
        f"{verify.rerun_advice(records_dir)}"
    )
    try:
        report = verify.verify_records(records_dir, node, split if isinstance(split, str) else None)
    except (OSError, ValueError) as problem:
        return (
            f"damaged records in {records_dir} ({error.message}), and its manifest cannot be "
            f"read ({problem}); {fix}"
        )
    if report.bad:
        named = ", ".join(
            f"{fileio.join(records_dir, shard.path)} ({shard.reason})" for shard in report.bad
        )
        return f"damaged shard {named}; {fix}"
    return (
        f"reading {'+'.join(nodes)}/{split} in {records_dir} failed ({error.message}), yet every "
        "shard matches the manifest "
        f"(a disk or network read error?); {fix}"
    )
