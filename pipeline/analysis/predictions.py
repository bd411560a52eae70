"""A model's predictions on a split, three ways to the same numbers: from the cached records through
its export, from the raw images through its export, or from a run's checkpoint and the records in
memory (compare scores its arms so, without loading the exports).

    Predictions
      topology [N, classes]             the model
      branches [N, branches, classes]   the baseline model on each record branch alone (branch 0 =
                                        the baseline): the stock backbone when the classes are
                                        ImageNet's, otherwise a single-branch model trained by the
                                        same trainer (--baseline); None without either
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import imagenet
from bottlenecks import registry
from pipeline import backbones
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.offline import images
from pipeline.offline import ladder
from pipeline.training import checkpoints
from pipeline.training import export
from pipeline.training import prepare as prepare_lib
from pipeline.training import run_directory
from tfrecords import manifest as manifest_lib
from tfrecords import reader


@dataclasses.dataclass
class Predictions:
    image_ids: list
    labels: np.ndarray  # [N], in the model's class space
    topology: np.ndarray  # [N, classes]
    branches: np.ndarray | None  # [N, branches, classes]; None without a baseline model
    branch_names: list
    class_names: list


class _BaselineModel:
    """The model that scores one branch at a time: the stock backbone, or a trained single-branch
    export."""

    def __init__(self, description: dict, baseline_logdir: str | None):
        self.trained = None
        self.stock = None
        if baseline_logdir:
            self.trained = export.ExportedClassifier(
                run_directory.RunDirectory(baseline_logdir).export_dir
            )
            if self.trained.description["branch_indices"] != [0]:
                raise errors.UserError(
                    f"--baseline {baseline_logdir} was trained on branches "
                    f"{self.trained.description['branches']}; train it with --branches 0"
                )
            if self.trained.class_names != description["class_names"]:
                raise errors.UserError(
                    f"--baseline {baseline_logdir} has other classes than the model"
                )
        elif description["label_space"] == "imagenet":
            self.stock = backbones.from_identity(
                description["backbone"],
                description["weights"],
                description["input_size"],
                description.get("weights_seed", 0),
            )
            self.backbone = registry.get_backbone(description["backbone"])

    @property
    def available(self) -> bool:
        return self.trained is not None or self.stock is not None

    def nodes(self, description: dict) -> list[str]:
        """The nodes it reads (several for a trained FBSD head)."""
        return self.trained.nodes if self.trained else [description["node"]]

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """[B, branches, S, S, 3] -> [B, branches, classes], each branch alone."""
        count, num_branches = pixels.shape[:2]
        flat = pixels.reshape((count * num_branches, 1) + pixels.shape[2:])
        if self.trained:
            scores = self.trained.probabilities_of_pixels(flat)
        else:
            scores = self.stock(self.backbone.preprocess(flat[:, 0]), training=False).numpy()
        return scores.reshape(count, num_branches, -1)

    def from_bottlenecks(self, bottlenecks, node: str) -> np.ndarray:
        """[B, branches, *node_shape] (or {node: them}) -> [B, branches, classes], each branch
        alone."""
        count, num_branches = tf.nest.flatten(bottlenecks)[0].shape[:2]
        flat = tf.nest.map_structure(
            lambda value: value.reshape((count * num_branches, 1) + value.shape[2:]), bottlenecks
        )
        if self.trained:
            scores = self.trained.probabilities_of_bottlenecks(flat)
        else:
            features = cut.tail(self.stock, node)(flat[:, 0], training=False)
            scores = cut.classifier_layer(self.stock)(features).numpy()
        return scores.reshape(count, num_branches, -1)


def _arrays(bottlenecks):
    """Tensors (one, or {node: tensor}) as arrays."""
    return tf.nest.map_structure(lambda value: value.numpy(), bottlenecks)


def _dataset_nodes(nodes: list[str]):
    """What reader.make_dataset takes as its node: the one, or the several."""
    return nodes[0] if len(nodes) == 1 else tuple(nodes)


class _LabelMapper(dict):
    """Dataset class name -> index in the model's classes (a missing name fails with the fix)."""

    def __init__(self, description: dict):
        super().__init__()
        self.imagenet = description["label_space"] == "imagenet"
        self.class_names = description["class_names"]
        if not self.imagenet:
            self.update((name, index) for index, name in enumerate(self.class_names))

    def __missing__(self, name: str) -> int:
        if self.imagenet:  # wnids, or integer ImageNet indices as in ILSVRC validation label files
            indices = imagenet.imagenet_indices([name], integers_are_indices=True)
            if indices is not None:
                self[name] = indices[0]
                return indices[0]
        raise errors.UserError(
            f"class {name!r} is not one of the model's classes "
            f"({', '.join(self.class_names[:10])}{', ...' if len(self.class_names) > 10 else ''})"
        )


def from_records(
    model_dir: str,
    manifest: manifest_lib.Manifest,
    baseline_logdir=None,
    split="test",
    batch_size=32,
) -> Predictions:
    """Predictions on one split of the records ("all": every split of them, one after the other)."""
    if split == "all":
        parts = [
            from_records(model_dir, manifest, baseline_logdir, name, batch_size)
            for name in manifest.splits
        ]
        return Predictions(
            [image_id for part in parts for image_id in part.image_ids],
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.topology for p in parts]),
            None if parts[0].branches is None else np.concatenate([p.branches for p in parts]),
            parts[0].branch_names,
            parts[0].class_names,
        )
    model = export.ExportedClassifier(model_dir)
    description = model.description
    baseline = _BaselineModel(description, baseline_logdir)
    mapper = _LabelMapper(description)
    label_of = np.asarray([mapper[name] for name in manifest.class_names])
    nodes = _dataset_nodes(model.nodes)
    topology, labels, image_ids = [], [], []
    with reader.explained_data_loss(manifest.directory, nodes, split):
        for bottlenecks, label, image_id in reader.make_dataset(
            manifest,
            nodes,
            split,
            batch_size,
            with_ids=True,
            branches=description["branch_indices"],
        ):
            topology.append(model.probabilities_of_bottlenecks(_arrays(bottlenecks)))
            labels.append(label_of[label.numpy()])
            image_ids.extend(image_id.numpy().astype(str))
    branches = None
    if baseline.available:
        by_id = {}
        baseline_nodes = _dataset_nodes(baseline.nodes(description))
        with reader.explained_data_loss(manifest.directory, baseline_nodes, split):
            for bottlenecks, _, image_id in reader.make_dataset(
                manifest, baseline_nodes, split, batch_size, with_ids=True
            ):
                by_id.update(
                    zip(
                        image_id.numpy().astype(str),
                        baseline.from_bottlenecks(_arrays(bottlenecks), baseline_nodes),
                    )
                )
        branches = np.stack([by_id[image_id] for image_id in image_ids])
    return Predictions(
        image_ids,
        np.concatenate(labels),
        np.concatenate(topology),
        branches,
        list(manifest.branches),
        list(description["class_names"]),
    )


def from_images(
    model_dir: str,
    index: images.ImageIndex,
    baseline_logdir=None,
    split: str | None = "test",
    batch_size: int = 8,
) -> Predictions:
    """The same figures from raw image files, decoded and laddered as the offline stage does."""
    model = export.ExportedClassifier(model_dir)
    description = model.description
    baseline = _BaselineModel(description, baseline_logdir)
    mapper = _LabelMapper(description)
    items = index.items if split is None else index.split(split)
    selected = np.asarray(description["branch_indices"])
    topology, branches, labels, image_ids = [], [], [], []
    for start in range(0, len(items), batch_size):
        batch, pixels = [], []
        for item in items[start : start + batch_size]:
            try:
                pixels.append(model.file_branch_pixels(item.path))
            except ladder.BadImage:
                continue  # the offline stage quarantined it too
            batch.append(item)
        if not batch:
            continue
        pixels = np.stack(pixels)
        topology.append(model.probabilities_of_pixels(pixels[:, selected]))
        if baseline.available:
            branches.append(baseline.from_pixels(pixels))
        labels.extend(mapper[index.class_names[item.label]] for item in batch)
        image_ids.extend(item.image_id for item in batch)
    branch_names = list(
        description.get("record_branches") or branches_lib.ladder_names(description["qualities"])
    )
    return Predictions(
        image_ids,
        np.asarray(labels),
        np.concatenate(topology),
        np.concatenate(branches) if branches else None,
        branch_names,
        list(description["class_names"]),
    )


BATCH = 512


def from_run(
    setup: prepare_lib.Setup, checkpoint: str, split: str, each_branch: bool = False
) -> Predictions:
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
    return Predictions(
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
