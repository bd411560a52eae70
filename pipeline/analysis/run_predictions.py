"""A finished training run's predictions on a split, from its last stage's best checkpoint and the
node's records held in memory (pipeline.training.features), else read from the records: the numbers
its export gives from the records (evaluate.predictions_from_records), without writing or loading
the export.

The run's baseline columns (each record branch alone) come from the run itself when it is a
single-branch run (compare's baseline arm): the same model applied to every branch in turn.
"""

import numpy as np
import tensorflow as tf

from pipeline.analysis import evaluate
from pipeline.training import checkpoints
from pipeline.training import prepare as prepare_lib
from tfrecords import reader

BATCH = 512


def predictions(
    setup: prepare_lib.Setup, checkpoint: str, split: str, each_branch: bool = False
) -> evaluate.Predictions:
    """The run's class probabilities on `split` (test, say), with each record branch scored alone
    by the same model when `each_branch` (a single-branch run: the baseline's columns)."""
    node = setup.schedule[-1].node
    model = setup.build_model(node)  # built first, so that every weight exists to be restored
    checkpoints.restore(setup.trainable_objects(node), checkpoint)
    features, labels, image_ids = _split(setup, setup.stage_nodes(node), split)
    selected = tf.nest.map_structure(lambda value: value[:, list(setup.branches)], features)
    topology = _probabilities(model, selected)
    branches = None
    if each_branch:
        count, num_branches = tf.nest.flatten(features)[0].shape[:2]
        alone = tf.nest.map_structure(
            lambda value: value.reshape((count * num_branches, 1) + value.shape[2:]), features
        )
        branches = _probabilities(model, alone).reshape(count, num_branches, -1)
    if setup.label_map is not None:
        labels = setup.label_map[labels]
    return evaluate.Predictions(
        list(image_ids),
        labels,
        topology,
        branches,
        list(setup.manifest.branches),
        list(setup.class_names),
    )


def _split(setup, nodes: tuple[str, ...], split: str) -> tuple:
    """Every branch of `split` of the stage's node (under fbsd {node: ...} of its head's nodes):
    features [N, record branches, *node], labels, ids."""
    if len(nodes) == 1 and nodes[0] in setup.features:
        rows = setup.features[nodes[0]].split(split)
        return rows.features, rows.labels, rows.image_ids
    which = nodes[0] if len(nodes) == 1 else nodes
    features, labels, image_ids = [], [], []
    with reader.explained_data_loss(setup.manifest.directory, which, split):
        for batch, label, image_id in reader.make_dataset(
            setup.manifest, which, split, BATCH, with_ids=True
        ):
            features.append(tf.nest.map_structure(lambda value: value.numpy(), batch))
            labels.append(label.numpy())
            image_ids.append(image_id.numpy().astype(str))
    joined = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *features)
    return joined, np.concatenate(labels), np.concatenate(image_ids)


def _probabilities(model, bottlenecks) -> np.ndarray:
    """softmax of the model's logits, batch by batch (as the export's classify_bottlenecks)."""
    count = len(tf.nest.flatten(bottlenecks)[0])
    return np.concatenate(
        [
            tf.nn.softmax(
                model(
                    tf.nest.map_structure(lambda value: value[start : start + BATCH], bottlenecks),
                    training=False,
                )["logits"]
            )
            .numpy()
            .astype(np.float32)
            for start in range(0, count, BATCH)
        ]
    )
