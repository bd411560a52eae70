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
from pipeline import branches as branches_lib
from pipeline.config import offline as offline_config
from pipeline.offline import codecs
from pipeline.offline import images
from pipeline.offline import ladder
from pipeline.offline import views
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

    config: offline_config.ExtractConfig
    nodes: tuple[str, ...]
    input_size: int
    view_nodes: tuple[str, ...] = ()  # with views: the two nodes whose maps find the object

    @property
    def spec(self) -> views.ViewSpec:
        return views.ViewSpec.parse(self.config.views)

    @property
    def ladder_names(self) -> tuple[str, ...]:
        """The original and every codec's re-encodings, JPEG's first."""
        return branches_lib.ladder_names(self.config.jpeg_qualities, self.config.other_codecs)

    @property
    def branch_names(self) -> tuple[str, ...]:
        """Every branch of a record, in order: the ladders, then the views."""
        return self.ladder_names + self.spec.names

    @property
    def num_branches(self) -> int:
        return len(self.branch_names)

    @property
    def first_pass_branches(self) -> int:
        """The branches the CNN sees first, made from the photo alone: the ladders, the mirror,
        the content-adaptive compression."""
        return len(self.ladder_names) + self.spec.first_pass


def check_paths(config: offline_config.ExtractConfig) -> None:
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


def first_pass_images(image: tf.Tensor, extraction: Extraction) -> tuple[tf.Tensor, tf.Tensor]:
    """One decoded image -> (the CNN inputs of its first pass, float32 [first_pass_branches, S, S,
    3]: the JPEG ladder, the other codecs' re-encodings, then the mirror and tcm; the photo the
    object is cropped from, uint8, or a 1-pixel stand-in when no view needs it)."""
    config = extraction.config
    pixels = ladder.branch_images(
        image, extraction.input_size, config.jpeg_qualities, config.central_crop
    )
    spec = extraction.spec
    more = views.photo_views(image, spec, extraction.input_size, config.central_crop)
    if config.other_codecs:
        more = [
            codecs.coded_pixels_op(
                image, config.other_codecs, extraction.input_size, config.central_crop
            )
        ] + more
    if more:
        pixels = tf.concat([pixels, *more], 0)
    if spec.needs_box:
        return pixels, views.cropped_photo(image, config.central_crop)
    return pixels, tf.zeros([1, 1, 3], tf.uint8)


def branch_images_function(extraction: Extraction):
    """first_pass_images for one decoded image, traced once (as a tf.data map traces it)."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def branch_images(image):
        return first_pass_images(image, extraction)

    return branch_images


def decoded_branches(tasks, extraction: Extraction) -> tf.data.Dataset:
    """(first-pass images float32 [B, S, S, 3], photo uint8, error message) per image of the tasks,
    in order, decoded in parallel."""

    def load(path):
        try:
            return ladder.load_rgb(path.numpy().decode()), ""
        except ladder.BadImage as error:
            return np.zeros((8, 8, 3), np.uint8), str(error)

    def decode_and_ladder(path):
        image, error = tf.py_function(load, [path], [tf.uint8, tf.string])
        image.set_shape([None, None, 3])
        pixels, photo = first_pass_images(image, extraction)
        return pixels, photo, error

    paths = [item.path for task in tasks for item in task.items]
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    dataset = dataset.map(
        decode_and_ladder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


class _FixedPass:
    """The frozen CNN on a fixed-size, zero-padded batch of pixels: one trace, the same kernels for
    every batch."""

    def __init__(self, extract_model, rows: int, size: int):
        self.pixels = np.zeros((rows, size, size, 3), np.float32)

        @tf.function(input_signature=[tf.TensorSpec(self.pixels.shape, tf.float32)])
        def forward(pixels):
            return extract_model(pixels, training=False)

        self._forward = forward

    def run(self, rows: int) -> dict:
        """{node: [rows, ...]} for the first rows; the rest of the batch is padding."""
        self.pixels[rows:] = 0.0  # padding: the same input on every run
        return {node: value.numpy()[:rows] for node, value in self._forward(self.pixels).items()}


class BatchForward:
    """The frozen CNN at every node in fixed-size, zero-padded passes over a batch; every runner
    uses it.

    A fixed batch shape means one trace and the same kernels for every batch, so a resumed shard, or
    a Beam worker given the same batch, computes exactly what an uninterrupted local run would.
    With views, the first pass (the ladder and the mirror) also gives the original's maps at the
    view nodes; the object crops go through a second pass, and their part crops through a third
    (pipeline.offline.views).
    """

    def __init__(self, backbone: registry.Backbone, model, extraction: Extraction):
        self.nodes = extraction.nodes
        self.spec = extraction.spec
        self.view_nodes = extraction.view_nodes
        self.num_ladder = len(extraction.ladder_names)
        self.first = extraction.first_pass_branches
        outputs = registry.check_nodes(backbone, set(self.nodes) | set(self.view_nodes))
        extract_model = cut.extractor(model, backbone, outputs)
        size, batch = extraction.input_size, extraction.config.batch_size
        self._passes = {"first": _FixedPass(extract_model, batch * self.first, size)}
        if self.spec.needs_box:
            self._passes["object"] = _FixedPass(extract_model, batch, size)
            self._object = _object_function(size)
        if self.spec.parts:
            self._passes["parts"] = _FixedPass(extract_model, batch * self.spec.parts, size)
            self._parts = _parts_function(self.spec.parts, size)
        self.photos = [None] * batch

    def put(self, slot: int, branches: np.ndarray, photo=None) -> None:
        """Places one image's first-pass branches (and its photo, for the views) at position slot
        of the batch."""
        self._passes["first"].pixels[slot * self.first : (slot + 1) * self.first] = branches
        self.photos[slot] = photo

    def run(self, count: int) -> tuple[dict, np.ndarray | None]:
        """({node: [count, branches, ...]}, the views' boxes [count, 4 + 4 * parts] or None) for
        the first count images; the rest of the batch is padding."""
        first = {
            node: value.reshape((count, self.first) + value.shape[1:])
            for node, value in self._passes["first"].run(count * self.first).items()
        }
        pieces = {node: [first[node][:, : self.num_ladder]] for node in self.nodes}
        boxes = None
        if self.spec.needs_box:
            boxes = self._views(first, count, pieces)
        if self.spec.first_pass:  # the mirror and tcm, after the crops
            for node in self.nodes:
                pieces[node].append(first[node][:, self.num_ladder :])
        activations = {node: np.concatenate(pieces[node], axis=1) for node in self.nodes}
        return activations, boxes

    def _views(self, first: dict, count: int, pieces: dict) -> np.ndarray:
        earlier, last = self.view_nodes
        objects, boxes = [], []
        pass_ = self._passes["object"]
        for slot in range(count):
            pixels, crop, box = self._object(
                self.photos[slot], first[earlier][slot, 0], first[last][slot, 0]
            )
            pass_.pixels[slot] = pixels.numpy()[0]
            objects.append(crop)
            boxes.append(box.numpy())
        found = pass_.run(count)
        if self.spec.object:
            for node in self.nodes:
                pieces[node].append(found[node][:, None])
        if self.spec.parts:
            parts = self.spec.parts
            pass_ = self._passes["parts"]
            for slot in range(count):
                pixels, part_boxes = self._parts(objects[slot], found[last][slot], boxes[slot])
                pass_.pixels[slot * parts : (slot + 1) * parts] = pixels.numpy()
                boxes[slot] = np.concatenate([boxes[slot], part_boxes.numpy()])
            found = pass_.run(count * parts)
            for node in self.nodes:
                value = found[node]
                pieces[node].append(value.reshape((count, parts) + value.shape[1:]))
        return np.stack(boxes)


def _object_function(size: int):
    """views.object_crop and its CNN input for one photo, traced once for any photo size."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None, None, None], tf.float32),
        ]
    )
    def object_view(photo, earlier_map, last_map):
        crop, box = views.object_crop(photo, earlier_map, last_map)
        return views.for_backbone(crop, size), crop, box

    return object_view


def _parts_function(num_parts: int, size: int):
    """views.part_crops and their CNN inputs for one object crop, with the windows as boxes in the
    photo, traced once."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([4], tf.float32),
        ]
    )
    def part_views(object_photo, last_map, box):
        crops, windows = views.part_crops(object_photo, last_map, num_parts)
        pixels = tf.concat([views.for_backbone(crop, size) for crop in crops], 0)
        photo_boxes = tf.concat([views.in_photo(windows[k], box) for k in range(num_parts)], 0)
        return pixels, photo_boxes

    return part_views


def serialize_batch(
    batch_items, activations: dict, encodings: dict, dtype: str, boxes=None
) -> tuple[dict, dict, list]:
    """One batch's records per node ({node: [bytes]}, in item order, values in dtype), its zero
    counts and its views.csv rows ([image_id, box values...] per image; none without views)."""
    records, zeros = {}, {}
    for node, values in activations.items():
        zeros[node] = sparsity.ZeroCounter()
        zeros[node].update(values)
        records[node] = [
            example.serialize(item.image_id, item.label, bottleneck, encodings[node], dtype)
            for item, bottleneck in zip(batch_items, values)
        ]
    rows = []
    if boxes is not None:
        rows = [
            [item.image_id] + [float(value) for value in box]
            for item, box in zip(batch_items, boxes)
        ]
    return records, zeros, rows


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
        self.boxes = []  # views.csv rows of the shard's images, with views
        self.num_records = 0

    @classmethod
    def for_task(cls, task: ShardTask, out_dir: str, nodes, compression: str) -> "ShardBuilder":
        return cls(task.name, task.split, task.index, out_dir, nodes, compression)

    def add_batch(
        self, batch_items, activations: dict, encodings: dict, dtype: str, boxes=None
    ) -> None:
        self.add_records(*serialize_batch(batch_items, activations, encodings, dtype, boxes))

    def add_records(self, records: dict, zeros: dict, boxes=()) -> None:
        """Appends one batch's serialized records ({node: [bytes]}), zero counts ({node:
        ZeroCounter}) and views.csv rows."""
        self.boxes.extend(boxes)
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
            **({"boxes": self.boxes} if self.boxes else {}),
        }

    def abort(self) -> None:
        for shard_writer in self.writers.values():
            shard_writer.abort()
