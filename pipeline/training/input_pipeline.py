"""The input pipeline of a training run: which records a run reads as its train and validation
splits (its fold, or train + validation for a replay), and the tf.data batches of a stage."""

import functools
import math

import tensorflow as tf

from pipeline.training import features as features_lib
from tfrecords import manifest as manifest_lib
from tfrecords import reader


def records_of(role, split: str) -> tuple[tuple[str, ...], tuple | None]:
    """The records a run of this role (pipeline.training.selection.Role) reads as its train or
    validation split: (the record splits, a fold filter).

    A plain run reads them as they are. A fold run (role.fold = (K, i)) pools train and validation
    and holds fold i out to choose on; a replay (--refit, --folds) trains on the pool and chooses
    nothing. Only evaluation ever reads test.
    """
    if role.fold is not None:
        count, index = role.fold
        return ("train", "validation"), (count, index, split == "validation")
    if role.replay is not None:
        if split == "validation":
            raise ValueError("a replay trains on train and validation: there is no validation")
        return ("train", "validation"), None
    return (split,), None


def num_examples(role, manifest: manifest_lib.Manifest, split: str) -> int:
    """How many images a run's train or validation split holds (a fold's, about its share)."""
    splits, fold = records_of(role, split)
    total = sum(manifest.num_records(name) for name in splits)
    if fold is None:
        return total
    count, _, keep = fold
    return max(1, round(total / count if keep else total * (count - 1) / count))


def stage_dataset(
    setup,
    node: str,
    split: str,
    *,
    training: bool,
    seed: int = 0,
    start_batch: int = 0,
    branches=None,
    batch_size: int | None = None,
    file_shard: tuple[int, int] | None = None,
    with_ids: bool = False,
    nodes: tuple[str, ...] | None = None,
) -> tf.data.Dataset:
    """Batches of (bottlenecks, labels in the head's class space[, image ids]) of the run's train or
    validation split (see records_of) for the stage reading `node`.

    The bottlenecks are the node's, or under fbsd {node: bottlenecks} of the head's nodes
    (Setup.stage_nodes); `nodes` reads other nodes instead. Batches are of the global batch unless
    `batch_size` is given; `file_shard` as in reader.make_dataset. A node whose records the run
    holds in memory (Setup.features: compare reads each node once for every arm) is read from
    there.
    """
    config = setup.config
    branches = branches or setup.branches
    nodes = nodes or setup.stage_nodes(node)
    record_splits, fold = records_of(setup.role, split)
    if len(nodes) == 1 and nodes[0] in setup.features and file_shard is None:
        dataset = features_lib.dataset(
            setup.features[nodes[0]].rows(record_splits, fold),
            batch_size or config.batch_size,
            branches=branches,
            shuffle=training,
            seed=seed,
            repeat=training,
            drop_remainder=training,
            start_batch=start_batch,
            with_ids=with_ids,
        )
        return dataset.map(_labels_in_head_space(setup), num_parallel_calls=tf.data.AUTOTUNE)
    decoded_mb = (
        num_examples(setup.role, setup.manifest, split)
        * len(branches)
        * sum(math.prod(setup.manifest.node(one).shape[1:]) for one in nodes)
        * 4
        / 2**20
    )
    if (
        training
        and decoded_mb > config.cache_mb
        and config.progress
        and reader.loaded_allocator() == "malloc"
    ):
        suggest_allocator()
    dataset = reader.make_dataset(
        setup.manifest,
        nodes[0] if len(nodes) == 1 else nodes,
        record_splits,
        batch_size or config.batch_size,
        shuffle=training,
        seed=seed,
        repeat=training,
        drop_remainder=training,
        branches=branches,
        shuffle_buffer=config.shuffle_buffer,
        shuffle_buffer_bytes=config.shuffle_buffer_mb * 2**20,
        start_batch=start_batch,
        cache_decoded=decoded_mb <= config.cache_mb,
        file_shard=file_shard,
        fold=fold,
        with_ids=with_ids,
    )
    return dataset.map(_labels_in_head_space(setup), num_parallel_calls=tf.data.AUTOTUNE)


def _labels_in_head_space(setup):
    """A map over batches: the records' labels as the head's classes (ImageNet's, when they are)."""
    num_classes = setup.num_classes
    label_map = None if setup.label_map is None else tf.constant(setup.label_map)

    def labels_in_head_space(bottlenecks, labels, *image_ids):
        if label_map is not None:
            labels = tf.gather(label_map, labels)
        check = tf.debugging.assert_less(
            labels,
            num_classes,
            message=(
                "a record's label is beyond the decision layer's classes: the records and the run "
                "disagree"
            ),
        )
        with tf.control_dependencies([check]):
            return (bottlenecks, tf.identity(labels), *image_ids)

    return labels_in_head_space


@functools.cache  # once per process
def suggest_allocator() -> None:
    print(
        "the training split is read from the records every epoch (it exceeds --cache-mb): running "
        "with LD_PRELOAD=libtcmalloc_minimal.so.4 (Debian/Ubuntu package libtcmalloc-minimal4) "
        "takes about 40 % off the CPU time of reading it, see docs/training.md (The input "
        "pipeline)"
    )
