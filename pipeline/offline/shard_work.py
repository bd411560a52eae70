"""The work of one shard, the same on every runner: its batches, the forward pass, serialisation,
the writer.

A batch is a fixed slice of a shard's items (batch_slices) run through the frozen CNN at a fixed,
zero-padded shape (BatchForward), so every image meets the same kernels at the same batch position
on any runner and in any rerun: the records are identical byte for byte however the work was
scheduled.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import registry
from bottlenecks import sparsity
from pipeline import config as config_lib
from pipeline.offline import images
from pipeline.offline import ladder
from tfrecords import example
from tfrecords import fileio
from tfrecords import shards
from tfrecords import writer


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard of one split: its place in the split and the images it holds, in order."""

    split: str
    index: int
    num_shards: int
    items: tuple[images.ImageItem, ...]

    @property
    def name(self) -> str:
        return shards.shard_filename(self.split, self.index, self.num_shards)


@dataclasses.dataclass(frozen=True)
class Extraction:
    """What every shard of a job is made with: the job's config, its nodes and the CNN's input
    size."""

    config: config_lib.ExtractConfig
    nodes: tuple[str, ...]
    input_size: int

    @property
    def num_branches(self) -> int:
        return 1 + len(self.config.qualities)


def check_paths(config: config_lib.ExtractConfig) -> None:
    """Fails in one line on a URL whose file system TensorFlow lacks; each Beam worker calls it too,
    since it also loads tensorflow-io's file systems (s3://, hdfs://) into the process."""
    saved_model = config.backbone.startswith(
        f"{registry.SAVEDMODEL}:"
    )  # hub: handles are not files
    for flag, path in (
        ("--out-dir", config.out_dir),
        ("--data-dir", config.data_dir),
        ("--labels-csv", config.labels_csv),
        ("--weights", config.weights),
        ("--backbone", config.backbone if saved_model else None),
    ):
        if path:
            fileio.check_scheme(path.removeprefix(f"{registry.SAVEDMODEL}:"), f"{flag} {path}")


def batch_slices(task: ShardTask, batch_size: int) -> list[tuple[images.ImageItem, ...]]:
    """The CNN batches of a shard: consecutive slices of its items, whatever gets quarantined.

    Fixed by the plan alone, so every runner, and every rerun, puts each image in the same batch at
    the same place: the activations then do not depend on how the work was scheduled.
    """
    return [
        task.items[start : start + batch_size] for start in range(0, len(task.items), batch_size)
    ]


def branch_images_function(extraction: Extraction):
    """ladder.branch_images for one decoded image, traced once (as a tf.data map traces it)."""
    config = extraction.config

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def branch_images(image):
        return ladder.branch_images(
            image, extraction.input_size, config.qualities, config.central_crop
        )

    return branch_images


def decoded_branches(tasks, extraction: Extraction) -> tf.data.Dataset:
    """(branch images float32 [B, S, S, 3], error message) per image of the tasks, in order, decoded
    in parallel."""
    config = extraction.config

    def load(path):
        try:
            return ladder.load_rgb(path.numpy().decode()), ""
        except ladder.BadImage as error:
            return np.zeros((8, 8, 3), np.uint8), str(error)

    def decode_and_ladder(path):
        image, error = tf.py_function(load, [path], [tf.uint8, tf.string])
        image.set_shape([None, None, 3])
        return ladder.branch_images(
            image, extraction.input_size, config.qualities, config.central_crop
        ), error

    paths = [item.path for task in tasks for item in task.items]
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    dataset = dataset.map(
        decode_and_ladder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class BatchForward:
    """The frozen CNN at every node in one pass over a fixed-size, zero-padded batch; every runner
    uses it.

    A fixed batch shape means one trace and the same kernels for every batch, so a resumed shard, or
    a Beam worker given the same batch, computes exactly what an uninterrupted local run would.
    """

    def __init__(self, backbone: registry.Backbone, model, extraction: Extraction):
        self.nodes = extraction.nodes
        self.num_branches = extraction.num_branches
        extract_model = cut.extractor(model, backbone, self.nodes)
        size = extraction.input_size
        self.pixels = np.zeros(
            (extraction.config.batch_size * self.num_branches, size, size, 3), np.float32
        )

        @tf.function(input_signature=[tf.TensorSpec(self.pixels.shape, tf.float32)])
        def forward(pixels):
            return extract_model(pixels, training=False)

        self._forward = forward

    def put(self, slot: int, branches: np.ndarray) -> None:
        """Places one image's branches at position slot of the batch."""
        self.pixels[slot * self.num_branches : (slot + 1) * self.num_branches] = branches

    def run(self, count: int) -> dict:
        """{node: [count, branches, ...]} for the first count images; the rest of the batch is
        padding."""
        self.pixels[count * self.num_branches :] = 0.0  # padding: the same input on every run
        outputs = self._forward(self.pixels)
        return {
            node: outputs[node]
            .numpy()[: count * self.num_branches]
            .reshape((count, self.num_branches) + tuple(outputs[node].shape[1:]))
            for node in self.nodes
        }


def serialize_batch(
    batch_items, activations: dict, encodings: dict, dtype: str
) -> tuple[dict, dict]:
    """One batch's records per node ({node: [bytes]}, in item order, values in dtype) and its zero
    counts."""
    records, zeros = {}, {}
    for node, values in activations.items():
        zeros[node] = sparsity.ZeroCounter()
        zeros[node].update(values)
        records[node] = [
            example.serialize(item.image_id, item.label, bottleneck, encodings[node], dtype)
            for item, bottleneck in zip(batch_items, values)
        ]
    return records, zeros


class ShardBuilder:
    """Writes one shard of every node: the open writers, its quarantine and its statistics.

    finish() verifies and renames every file into place and returns the shard's result (what the
    job's progress keeps and the manifest is made of); abort() leaves no temporary file behind.
    """

    def __init__(
        self, task_name: str, split: str, index: int, out_dir: str, nodes, compression: str
    ):
        self.name, self.split, self.index = task_name, split, index
        self.out_dir = out_dir
        self.writers = {}
        try:
            for node in nodes:
                self.writers[node] = writer.ShardWriter(
                    fileio.join(out_dir, node, task_name), compression or None
                )
        except BaseException:
            self.abort()  # the writers already opened must not leave their temporary files
            raise
        self.quarantine = []  # [path, reason] per image skipped
        self.zeros = {node: sparsity.ZeroCounter() for node in nodes}
        self.num_records = 0

    @classmethod
    def for_task(cls, task: ShardTask, out_dir: str, nodes, compression: str) -> "ShardBuilder":
        return cls(task.name, task.split, task.index, out_dir, nodes, compression)

    def add_batch(self, batch_items, activations: dict, encodings: dict, dtype: str) -> None:
        self.add_records(*serialize_batch(batch_items, activations, encodings, dtype))

    def add_records(self, records: dict, zeros: dict) -> None:
        """Appends one batch's serialized records ({node: [bytes]}) and zero counts ({node:
        ZeroCounter})."""
        for node, serialized in records.items():
            self.zeros[node].merge(zeros[node])
            for record in serialized:
                self.writers[node].write(record)
        self.num_records += len(next(iter(records.values())))

    def finish(self) -> dict:
        files = {}
        for node, shard_writer in self.writers.items():
            info = shard_writer.close()
            files[node] = {
                "path": fileio.relpath(info.path, self.out_dir),
                "sha256": info.sha256,
                "num_bytes": info.num_bytes,
            }
        return {
            "split": self.split,
            "index": self.index,
            "num_records": self.num_records,
            "files": files,
            "quarantine": self.quarantine,
            "zeros": {node: [counter.zeros, counter.total] for node, counter in self.zeros.items()},
        }

    def abort(self) -> None:
        for shard_writer in self.writers.values():
            shard_writer.abort()
