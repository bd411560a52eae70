"""One node's cached bottlenecks held in memory: read from the records once, then sliced by split,
branch and fold for every run that needs them (the solver, compare's arms and seeds).

    Features.load(manifest, node)      every split and branch of `node`, float32
    features.split("train")            Split: features [N, branches, *node], labels, image ids
    features.rows(splits, fold)        the images a run trains or chooses on (its fold, or
                                       train + validation for a replay), as
                                       pipeline.training.input_pipeline.records_of names them
    features.dataset(...)              the same rows as the tf.data batches stage_dataset makes
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfrecords import manifest as manifest_lib
from tfrecords import reader

READ_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Split:
    """The images of one split (or of several, joined), in the records' order."""

    features: np.ndarray  # [N, branches, *node_shape] float32
    labels: np.ndarray  # [N] int32, the records' class indices
    image_ids: np.ndarray  # [N] str

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "Split":
        return Split(self.features[rows], self.labels[rows], self.image_ids[rows])

    @staticmethod
    def join(parts) -> "Split":
        parts = list(parts)
        return Split(
            np.concatenate([part.features for part in parts]),
            np.concatenate([part.labels for part in parts]),
            np.concatenate([part.image_ids for part in parts]),
        )


def in_fold(image_ids: np.ndarray, fold: tuple[int, int, bool]) -> np.ndarray:
    """reader.in_fold on ids held in memory: the same stable hash, so both agree on the folds."""
    if not len(image_ids):
        return np.zeros(0, bool)
    return reader.in_fold(tf.constant(image_ids.astype(str)), fold).numpy()


def float32_bytes(manifest: manifest_lib.Manifest, node: str, splits) -> int:
    """What holding `splits` of `node` in memory as float32 takes."""
    shape = manifest.node(node).shape
    return 4 * math.prod(shape) * sum(manifest.num_records(split) for split in splits)


class Features:
    """Every split of one node's records, read once into memory."""

    def __init__(self, node: str, splits: dict[str, Split], directory: str):
        self.node = node
        self.splits = splits
        self.directory = directory

    @classmethod
    def load(cls, manifest: manifest_lib.Manifest, node: str, splits=None) -> "Features":
        """Reads `splits` (default: every split the records hold) of `node`, all branches."""
        names = tuple(splits or manifest.splits)
        loaded = {}
        for name in names:
            features, labels, image_ids = [], [], []
            with reader.explained_data_loss(manifest.directory, node, name):
                for batch, label, image_id in reader.make_dataset(
                    manifest, node, name, READ_BATCH, with_ids=True
                ):
                    features.append(batch.numpy())
                    labels.append(label.numpy())
                    image_ids.append(image_id.numpy().astype(str))
            shape = (0,) + tuple(manifest.node(node).shape)
            loaded[name] = Split(
                np.concatenate(features) if features else np.zeros(shape, np.float32),
                np.concatenate(labels) if labels else np.zeros(0, np.int32),
                np.concatenate(image_ids) if image_ids else np.zeros(0, str),
            )
        return cls(node, loaded, manifest.directory)

    @property
    def num_bytes(self) -> int:
        return sum(split.features.nbytes for split in self.splits.values())

    def split(self, name: str) -> Split:
        return self.splits[name]

    def rows(self, record_splits: tuple[str, ...], fold: tuple | None = None) -> Split:
        """The images of record_splits joined, and with `fold` (K, i, keep) only those it keeps (see
        reader.in_fold): what input_pipeline.records_of names for a run's train or validation."""
        joined = Split.join(self.splits[name] for name in record_splits)
        return joined if fold is None else joined.take(in_fold(joined.image_ids, fold))


def dataset(
    rows: Split,
    batch_size: int,
    *,
    branches,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    start_batch: int = 0,
    with_ids: bool = False,
) -> tf.data.Dataset:
    """Batches of (bottlenecks [B, branches, *node], labels[, image ids]) from rows in memory, as
    reader.make_dataset gives them from the records: shuffled with `seed`, resumable at
    `start_batch`."""
    tensors = (rows.features[:, list(branches)], rows.labels.astype(np.int32))
    if with_ids:
        tensors += (rows.image_ids.astype(str),)
    examples = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        examples = examples.shuffle(max(1, len(rows)), seed=seed)
    if repeat:
        examples = examples.repeat()
    if start_batch:
        examples = examples.skip(start_batch * batch_size)
    return examples.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
