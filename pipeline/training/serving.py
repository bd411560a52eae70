"""The export's serving_default: a batch of encoded images in, each image's probabilities, top
classes and scores out, a bad row flagged and named without failing the others.

    serving_default(image_bytes: string [N])
        -> probabilities float32 [N, K], classes string [N, k] (best first), scores float32 [N, k]
           (k = min(5, K)), valid bool [N], error string [N] ("" where valid)

A row that cannot be decoded (empty, truncated, corrupt, not an image, or a format the graph cannot
decode) is answered with valid false, error naming the reason and zeros (and "" as class names) in
its outputs; the other rows are answered as usual. Failing the whole request instead would let one
bad image fail other clients' images too, wherever a server batches requests together (TensorFlow
Serving's batching does).

Each row is decoded in graph as the offline stage decodes (pipeline.offline.decode_graph), and only
the branches the model reads are made, with the offline stage's functions (the ladder, the views).
Every backbone pass runs batched over the rows, in chunks that bound its memory. Where the model's
backbone and the offline stage's agree up to the view nodes (a frozen backbone), the first pass also
gives the maps that find the object, so the object view costs one pass rather than two.

Branches of codecs TensorFlow cannot encode (WebP, AVIF, JPEG 2000) come in beside the bytes:
coded_pixels float32 [N, C, S, S, 3], made by pipeline.offline.codecs.coded_pixels from the photo
decoded as the offline stage decodes it, for the export's coded_branches (classes.json).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from pipeline import branches as branches_lib
from pipeline import traced
from pipeline.offline import decode_graph
from pipeline.offline import ladder
from pipeline.offline import view_ops
from pipeline.offline import views

TOP_K = 5
CHUNK = 64  # images a backbone pass takes at once: its activations bound the batch's memory
SIGNATURE = "serving_default"
INPUT = "image_bytes"
CODED_INPUT = "coded_pixels"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which branches serving makes, and so how many backbone passes each image costs."""

    names: tuple[str, ...]  # the branches the model reads, in its order
    spec: views.ViewSpec  # the records' views, with their settings (tcm's, the number of parts)
    input_size: int
    central_crop: float = 1.0
    shared_maps: bool = False  # the first pass's backbone also gives the view nodes' maps

    @property
    def coded(self) -> tuple[str, ...]:
        """The other codecs' branches, in the order codecs.coded_pixels makes them."""
        return tuple(
            f"{codec}{quality}"
            for codec, qualities in branches_lib.other_codecs(self.names)
            for quality in qualities
        )

    @property
    def made(self) -> tuple[str, ...]:
        """The branches made from the photo alone, in the graph: the JPEG ladder, hflip, tcm."""
        return tuple(
            name
            for name in self.names
            if name in (branches_lib.ORIGINAL, branches_lib.HFLIP, branches_lib.TCM)
            or branches_lib.quality(name) is not None
        )

    @property
    def first(self) -> tuple[str, ...]:
        """The branches of the first pass, in its order: those made here, then the coded ones."""
        return self.made + self.coded

    @property
    def parts(self) -> tuple[int, ...]:
        """The part crops read, by number (1-based)."""
        return tuple(
            int(name[len("part") :])
            for name in self.names
            if branches_lib.family(name) == branches_lib.PARTS
        )

    @property
    def needs_box(self) -> bool:
        return branches_lib.OBJECT in self.names or bool(self.parts)

    @property
    def box_pass(self) -> bool:
        """Whether finding the object takes a pass of its own over the original."""
        return self.needs_box and not (self.shared_maps and branches_lib.ORIGINAL in self.made)

    @property
    def parts_pass(self) -> bool:
        """Whether finding the parts takes a pass of its own over the object crop."""
        return bool(self.parts) and not (self.shared_maps and branches_lib.OBJECT in self.names)

    @property
    def passes(self) -> int:
        """Backbone passes per image: one per branch read, and those that find the crops."""
        return len(self.names) + int(self.box_pass) + int(self.parts_pass)


def same_maps(model: keras.Model, fresh: keras.Model) -> bool:
    """Whether two extractors of the view nodes hold the same weights: then the model's own
    backbone finds the object as the offline stage's copy does."""
    ours, theirs = model.weights, fresh.weights
    return len(ours) == len(theirs) and all(
        np.array_equal(np.asarray(left), np.asarray(right)) for left, right in zip(ours, theirs)
    )


def backbone_pass(model, input_size: int):
    """model as a graph function of pixels [N, S, S, 3] -> {node: activations}, run CHUNK images
    at a time: traced once however many passes call it, its memory bounded by a chunk's."""
    shapes = {node: tensor.shape[1:] for node, tensor in model.output.items()}

    @traced.graph_function(tf.TensorSpec([None, input_size, input_size, 3], tf.float32))
    def run(pixels):
        total = tf.shape(pixels)[0]
        arrays = {
            node: tf.TensorArray(
                tf.float32,
                size=0,
                dynamic_size=True,
                infer_shape=False,
                element_shape=[None, *shape],
            )
            for node, shape in shapes.items()
        }

        def body(index, arrays):
            start = index * CHUNK
            maps = model(pixels[start : tf.minimum(start + CHUNK, total)], training=False)
            return index + 1, {node: arrays[node].write(index, maps[node]) for node in arrays}

        _, arrays = tf.while_loop(
            lambda index, _: index * CHUNK < total, body, (tf.constant(0), arrays)
        )
        return {node: array.concat() for node, array in arrays.items()}

    return run


class Server:
    """serving_default's function: see the module docstring.

    front(pixels) -> {node: maps} at the head's nodes (and at the view nodes where
    plan.shared_maps); view_maps(pixels) -> {view node: maps}, the offline stage's backbone (both
    backbone_pass functions); classify({node: [B, branches, *shape]}) -> {"probabilities": [B, K]}.
    """

    def __init__(
        self, plan: Plan, front, nodes, classify, class_names, view_maps=None, view_nodes=()
    ):
        self.plan = plan
        self.size = plan.input_size
        self.front = front
        self.nodes = tuple(nodes)
        self.classify = classify
        self.class_names = tuple(class_names)
        self.view_maps = view_maps
        self.view_nodes = tuple(view_nodes)
        # One photo's pixels: traced once, however often the endpoint is.
        self._photo = traced.graph_function(decode_graph.BYTES, decode_graph.FORMAT)(self._pixels)

    @property
    def input_signature(self) -> list[tf.TensorSpec]:
        signature = [tf.TensorSpec([None], tf.string, name=INPUT)]
        if self.plan.coded:
            shape = [None, len(self.plan.coded), self.size, self.size, 3]
            signature.append(tf.TensorSpec(shape, tf.float32, name=CODED_INPUT))
        return signature

    def __call__(self, image_bytes, coded_pixels=None) -> dict:
        plan = self.plan
        formats, reasons = tf.map_fn(
            decode_graph.inspect, image_bytes, fn_output_signature=(tf.int32, tf.string)
        )
        prepared = tf.map_fn(
            lambda row: decode_graph.prepared(*row),
            (image_bytes, formats),
            fn_output_signature=tf.string,
        )
        rows = self._decodable(prepared, formats, reasons)
        data, kinds = tf.gather(prepared, rows), tf.gather(formats, rows)
        made, originals = self._photos(data, kinds)
        first = made
        if plan.coded:
            first = tf.concat([made, tf.gather(coded_pixels, rows)], 1)
        features = {}  # branch -> {node: [rows, *shape]}
        count = tf.shape(rows)[0]
        if plan.first:
            maps = self.front(self._flat(first))
            for index, name in enumerate(plan.first):
                features[name] = {
                    node: tf.reshape(value, [count, len(plan.first), *value.shape[1:]])[:, index]
                    for node, value in maps.items()
                }
        if plan.needs_box:
            if plan.box_pass:
                found = self.view_maps(originals)
            else:
                found = features[branches_lib.ORIGINAL]
            features.update(self._crops(data, kinds, found))
        bottlenecks = {
            node: tf.stack([features[name][node] for name in plan.names], 1) for node in self.nodes
        }
        # No row decoded: the head is not run, since a backbone's tail fails on an empty batch
        # (oneDNN's batch norm), and a request of bad rows only must still be answered.
        probabilities = tf.cond(
            count > 0,
            lambda: self.classify(bottlenecks)["probabilities"],
            lambda: tf.zeros([0, len(self.class_names)]),
        )
        return self._answer(image_bytes, rows, probabilities, formats, reasons)

    def _flat(self, pixels) -> tf.Tensor:
        return tf.reshape(pixels, [-1, self.size, self.size, 3])

    def _decodable(self, prepared, formats, reasons) -> tf.Tensor:
        """The rows whose bytes decode, int64 [rows]: those without a reason whose decoder does
        not fail."""
        count = tf.size(prepared, out_type=tf.int64)
        options = tf.data.Options()
        # Graph rewrites and autotuning would be redone at every request, for a handful of rows.
        options.experimental_optimization.apply_default_optimizations = False
        options.autotune.enabled = False
        # tf.data's ignore_errors is the graph's one way past a failing op: the decoders run here
        # once to find the rows that decode, and again on those rows alone, outside tf.data.
        dataset = (
            tf.data.Dataset.from_tensor_slices((tf.range(count), prepared, formats, reasons))
            .filter(lambda row, data, format_code, reason: tf.equal(reason, ""))
            .map(
                lambda row, data, format_code, reason: (row, decode_graph.check(data, format_code))
            )
            .ignore_errors()
            .map(lambda row, size: row)
            .batch(tf.maximum(count, 1))
            .with_options(options)
        )
        return dataset.reduce(tf.zeros([0], tf.int64), lambda _, rows: rows)

    def _photos(self, prepared, formats):
        """(the first-pass pixels made here [rows, made, S, S, 3], the originals' pixels that find
        the object [rows, S, S, 3] where that takes a pass of its own) of rows that decode."""
        plan, size = self.plan, self.size
        original_spec = tf.TensorSpec([size, size, 3] if plan.box_pass else [0, 0, 0])
        return tf.map_fn(
            lambda row: self._photo(*row),
            (prepared, formats),
            fn_output_signature=(tf.TensorSpec([len(plan.made), size, size, 3]), original_spec),
        )

    def _pixels(self, data, format_code):
        """(the first-pass pixels made from one photo's prepared bytes [made, S, S, 3], its
        original's pixels [S, S, 3] where finding the object takes a pass of its own)."""
        plan = self.plan
        photo = decode_graph.decode(data, format_code)
        original = tf.zeros([0, 0, 0])
        if plan.box_pass:
            original = ladder.resize_for_backbone(photo[None], self.size, plan.central_crop)[0]
        return self._made(photo), original

    def _made(self, photo) -> tf.Tensor:
        """One photo's branches made in graph, float32 [made, S, S, 3], with the offline stage's
        functions."""
        plan, size, crop = self.plan, self.size, self.plan.central_crop
        qualities = [branches_lib.quality(name) for name in plan.made]
        ladder_pixels = ladder.branch_images(
            photo, size, [quality for quality in qualities if quality is not None], crop
        )
        pixels, next_quality = [], 1
        for name, quality in zip(plan.made, qualities):
            if name == branches_lib.ORIGINAL:
                pixels.append(ladder_pixels[:1])
            elif quality is not None:
                pixels.append(ladder_pixels[next_quality : next_quality + 1])
                next_quality += 1
            elif name == branches_lib.HFLIP:
                pixels.append(views.mirrored(photo, size, crop))
            else:
                pixels.append(views.tcm_view(photo, plan.spec, size, crop))
        return tf.concat(pixels, 0) if pixels else tf.zeros([0, size, size, 3])

    def _crops(self, data, kinds, found) -> dict:
        """The object and part branches' features {branch: {node: [rows, *shape]}}, from the
        rows' prepared bytes and the original's maps at the view nodes (found)."""
        plan, size = self.plan, self.size
        earlier, last = self.view_nodes

        def photo_of(data, kind):  # decoded again: holding every photo would cost more memory
            return views.cropped_photo(decode_graph.decode(data, kind), plan.central_crop)

        def object_of(inputs):
            data, kind, earlier_map, last_map = inputs
            crop, box = views.object_crop(photo_of(data, kind), earlier_map, last_map)
            return views.for_backbone(crop, size)[0], box

        object_pixels, boxes = tf.map_fn(
            object_of,
            (data, kinds, found[earlier], found[last]),
            fn_output_signature=(tf.TensorSpec([size, size, 3]), tf.TensorSpec([4])),
        )
        features = {}
        if branches_lib.OBJECT in plan.names:
            features[branches_lib.OBJECT] = self.front(object_pixels)
        if not plan.parts:
            return features
        if plan.parts_pass:
            object_maps = self.view_maps(object_pixels)
        else:
            object_maps = features[branches_lib.OBJECT]

        def parts_of(inputs):
            data, kind, box, last_map = inputs
            crop = view_ops.crop_box(photo_of(data, kind), box)
            crops, _ = views.part_crops(crop, last_map, plan.spec.parts)
            return tf.concat(
                [views.for_backbone(crops[number - 1], size) for number in plan.parts], 0
            )

        part_pixels = tf.map_fn(
            parts_of,
            (data, kinds, boxes, object_maps[last]),
            fn_output_signature=tf.TensorSpec([len(plan.parts), size, size, 3]),
        )
        maps = self.front(self._flat(part_pixels))
        for index, number in enumerate(plan.parts):
            features[f"part{number}"] = {
                node: tf.reshape(value, [-1, len(plan.parts), *value.shape[1:]])[:, index]
                for node, value in maps.items()
            }
        return features

    def _answer(self, image_bytes, rows, probabilities, formats, reasons) -> dict:
        """The decoded rows' probabilities spread over every row, with the top classes and the
        bad rows' reasons."""
        count = tf.size(image_bytes, out_type=tf.int64)
        num_classes = len(self.class_names)
        indices = rows[:, tf.newaxis]
        valid = tf.scatter_nd(indices, tf.ones_like(rows, tf.int32), [count]) > 0
        probabilities = tf.scatter_nd(indices, probabilities, tf.stack([count, num_classes]))
        scores, top = tf.math.top_k(probabilities, min(TOP_K, num_classes))
        classes = tf.where(valid[:, tf.newaxis], tf.gather(tf.constant(self.class_names), top), "")
        failed = decode_graph.failure(formats)
        error = tf.where(valid, "", tf.where(tf.equal(reasons, ""), failed, reasons))
        return {
            "probabilities": probabilities,
            "classes": classes,
            "scores": scores,
            "valid": valid,
            "error": error,
        }
