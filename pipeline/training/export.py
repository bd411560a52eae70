"""The exported model: raw images in, class probabilities out, through the offline stage's ladder.

    export/                  a TensorFlow SavedModel with five endpoints, one per way in:
        serving_default(string image_bytes [N])              -> probabilities [N, classes],
            classes [N, k], scores [N, k], valid [N], error [N]: encoded images (JPEG, PNG, GIF,
            BMP, WebP) decoded in graph, as TensorFlow Serving calls a model (see
            pipeline.training.serving and docs/serving.md)
        classify(uint8 image [H, W, 3])                      -> {"probabilities": [classes]}
        branch_pixels(uint8 image [H, W, 3])                 -> float32 [record branches, S, S, 3]
        classify_pixels(float32 [B, branches, S, S, 3])      -> {"probabilities": [B, classes]}
        classify_bottlenecks(float32 [B, branches, *node])   -> {"probabilities": [B, classes]}
            (under --head fbsd: {node: float32 [B, branches, *node]} of the head's nodes)
    The last two take the ladder's pixels or the cached bottlenecks, so an evaluation can go through
    the very same model from raw images or from the records. With codecs other than JPEG (WebP,
    ...), which TensorFlow cannot encode, classify and branch_pixels take a second input: those
    branches' pixels, float32 [K, S, S, 3], made by pipeline.offline.codecs.coded_pixels, as
    ExportedClassifier does; serving_default takes those of the branches it reads as coded_pixels.
    export/classes.json      the classes, branches, node, input size and ladder, and serving's
                             inputs and backbone passes per image: what predict and evaluate read
The backbone's preprocessing is inside the model (a hub: or savedmodel: model's input range too),
and a SavedModel backbone travels inside the export, so the export needs neither the records nor the
backbone's files.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline import traced
from pipeline.offline import codecs
from pipeline.offline import ladder
from pipeline.offline import views
from pipeline.training import checkpoints
from pipeline.training import fbsd
from pipeline.training import serving
from tfrecords import fileio

CLASSES_NAME = "classes.json"


def export_model(setup, stage, checkpoint_path: str, export_dir: str) -> dict:
    """Writes the final stage's best model, from raw pixels to probabilities, to export_dir."""
    model = setup.build_model(stage.node)  # built first, so that every weight exists to be restored
    checkpoints.restore(setup.trainable_objects(stage.node), checkpoint_path)
    manifest = setup.manifest
    input_size, qualities, central_crop = (
        manifest.input_size,
        manifest.qualities,
        manifest.central_crop,
    )
    branches = tf.constant(setup.branches, tf.int32)
    # The node the stage reads, or under fbsd every node its head reads (then the bottlenecks are
    # {node: [B, branches, *node_shape]}).
    nodes = setup.stage_nodes(stage.node)
    front = cut.extractor(setup.backbone_model, setup.backbone, list(nodes))

    num_branches = len(setup.branches)
    shapes = setup.node_shapes(nodes)
    bottleneck_specs = {
        node: tf.TensorSpec(
            (None, num_branches) + shapes[node],
            tf.float32,
            name=fbsd.input_name(node) if setup.multi_level else None,
        )
        for node in nodes
    }

    bottleneck_spec = bottleneck_specs if setup.multi_level else bottleneck_specs[stage.node]

    # Traced once for the endpoints that share them (traced.graph_function): an export's time.
    @traced.graph_function(bottleneck_spec)
    def classify_bottlenecks(bottlenecks):
        return {"probabilities": tf.nn.softmax(model(bottlenecks, training=False)["logits"])}

    front_pass = serving.backbone_pass(front, input_size)

    def classify_pixels(pixels):
        flat = tf.reshape(pixels, [-1, input_size, input_size, 3])
        maps = front_pass(flat)
        bottlenecks = {
            node: tf.reshape(maps[node], (-1, num_branches) + shapes[node]) for node in nodes
        }
        return classify_bottlenecks(bottlenecks if setup.multi_level else bottlenecks[stage.node])

    spec = views.ViewSpec.parse((manifest.views or {}).get("spec"))
    view_front, view_nodes = None, ()
    if spec.needs_box:
        # The maps that find the object come from the backbone as the offline stage ran it: a
        # fresh copy, since training may have changed the layers after the stage's node.
        view_nodes = tuple(manifest.views["nodes"])
        backbone, fresh = backbones.from_manifest(manifest)
        view_front = cut.extractor(fresh, backbone, view_nodes)

    # The other codecs' re-encodings have no TensorFlow encoder: the reader makes their pixels
    # with the offline stage's function (codecs.coded_pixels) and passes them in as `coded`.
    num_coded = sum(len(values) for _, values in branches_lib.other_codecs(manifest.branch_names))

    image_spec = [tf.TensorSpec([None, None, 3], tf.uint8)]
    coded_spec = tf.TensorSpec([num_coded, input_size, input_size, 3], tf.float32)

    @traced.graph_function(image_spec[0], coded_spec)
    def branch_pixels(image, coded):
        # The very functions the offline stage used, so serving sees the pixels training saw.
        pixels = [ladder.branch_images(image, input_size, qualities, central_crop), coded]
        if spec:
            view_pixels, _ = views.image_views(
                image,
                spec,
                lambda batch: view_front(batch, training=False),
                tuple((manifest.views or {}).get("nodes", ())),
                input_size,
                central_crop,
            )
            pixels.append(view_pixels)
        return tf.concat(pixels, 0)

    def classify(image, coded):
        pixels = tf.gather(branch_pixels(image, coded), branches)
        return {"probabilities": classify_pixels(pixels[tf.newaxis])["probabilities"][0]}

    if num_coded:  # the endpoints take the codecs' pixels beside the image
        image_spec.append(coded_spec)
        endpoints = {"classify": classify, "branch_pixels": branch_pixels}
    else:  # an image alone, as before codecs existed
        endpoints = {
            "classify": lambda image: classify(image, tf.zeros(coded_spec.shape)),
            "branch_pixels": lambda image: branch_pixels(image, tf.zeros(coded_spec.shape)),
        }

    server = _server(setup, stage, front_pass, classify_bottlenecks, spec, view_front, view_nodes)
    archive = keras.export.ExportArchive()
    # The endpoints' variables are tracked by add_endpoint; track() only adds non-variable resources
    # (lookup tables, assets), and walking a model for them traces every layer's call: a third of
    # an export's time. Keras applications hold none; a hub: or savedmodel: backbone might.
    if setup.backbone.source != registry.KERAS:
        archive.track(front)
    for name, endpoint in endpoints.items():
        archive.add_endpoint(name, endpoint, input_signature=image_spec)
    archive.add_endpoint(serving.SIGNATURE, server.__call__, input_signature=server.input_signature)
    archive.add_endpoint(
        "classify_pixels",
        classify_pixels,
        input_signature=[
            tf.TensorSpec([None, num_branches, input_size, input_size, 3], tf.float32)
        ],
    )
    archive.add_endpoint(
        "classify_bottlenecks",
        classify_bottlenecks,
        input_signature=[bottleneck_spec],
    )
    temporary = export_dir.rstrip("/") + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    archive.write_out(temporary, verbose=False)
    description = {
        "class_names": list(setup.class_names),
        "node": stage.node,
        "nodes": list(nodes),
        "fusion": setup.config.fusion,
        "branches": list(setup.branch_names),
        "branch_indices": list(setup.branches),
        "record_branches": list(manifest.branch_names),
        "views": list(spec.text),
        "input_size": input_size,
        "central_crop": central_crop,
        "qualities": list(qualities),
        "backbone": setup.backbone.name,
        "input_range": None if manifest.input_range is None else list(manifest.input_range),
        "weights": manifest.weights,
        "label_space": "imagenet" if setup.label_map is not None else "dataset",
        "records_class_names": list(manifest.class_names),
        "weights_seed": manifest.weights_seed,
        "validation_percent": manifest.config.get("validation_percent", 10.0),
        # Records made before the test split existed have none: their held-out images are
        # validation.
        "test_percent": manifest.config.get("test_percent", 0.0),
        "serving": {
            "inputs": [spec.name for spec in server.input_signature],
            "coded_branches": list(server.plan.coded),
            "backbone_passes": server.plan.passes,
            "top_k": min(serving.TOP_K, len(setup.class_names)),
        },
    }
    fileio.write_json_atomic(os.path.join(temporary, CLASSES_NAME), description)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(temporary, export_dir)
    return {"path": export_dir, "node": stage.node}


def _server(setup, stage, front_pass, classify_bottlenecks, spec, view_front, view_nodes):
    """serving_default's function: the branches the model reads, made from encoded images."""
    manifest, size = setup.manifest, setup.manifest.input_size
    nodes = setup.stage_nodes(stage.node)
    plan = serving.Plan(setup.branch_names, spec, size, manifest.central_crop)
    view_pass = None if view_front is None else serving.backbone_pass(view_front, size)
    if plan.needs_box:
        # A backbone left as the offline stage ran it finds the object in the first pass's own
        # maps: one pass per image saved.
        own = cut.extractor(setup.backbone_model, setup.backbone, list(view_nodes))
        if serving.same_maps(own, view_front):
            plan = dataclasses.replace(plan, shared_maps=True)
            every = list(dict.fromkeys(tuple(nodes) + tuple(view_nodes)))
            front = cut.extractor(setup.backbone_model, setup.backbone, every)
            front_pass = serving.backbone_pass(front, size)

    def classify(maps):
        return classify_bottlenecks(maps if setup.multi_level else maps[stage.node])

    return serving.Server(
        plan, front_pass, nodes, classify, setup.class_names, view_pass, view_nodes
    )


class ExportedClassifier:
    """Loads an export and classifies image files, decoding them as the offline stage does."""

    def __init__(self, export_dir: str):
        self.description = fileio.read_json(os.path.join(export_dir, CLASSES_NAME))
        if self.description is None:
            raise FileNotFoundError(
                f"{export_dir} is not an exported model (no {CLASSES_NAME}); "
                f"pass LOGDIR/export of a finished training"
            )
        self.class_names = self.description["class_names"]
        self.export_dir = export_dir
        self._loaded = tf.saved_model.load(export_dir)

    @property
    def signatures(self):
        """The SavedModel's signatures, as a server calls them (serving_default and each
        endpoint)."""
        return self._loaded.signatures

    @property
    def serving(self) -> dict:
        """classes.json's serving entry: serving_default's inputs, the coded branches it takes
        beside the bytes, its backbone passes per image."""
        entry = self.description.get("serving")
        if entry is None:
            raise errors.UserError(
                f"{self.export_dir} was exported before serving_default took encoded images: "
                "delete it and run the same train-block-by-block command again (it exports "
                "without training)"
            )
        return entry

    def serve(self, image_bytes, coded_pixels=None) -> dict[str, np.ndarray]:
        """serving_default on encoded images [N] (and, for the coded branches, their pixels [N, C,
        S, S, 3]), called through its signature as a server calls it: {output: array}."""
        inputs = {serving.INPUT: tf.constant(list(image_bytes), tf.string)}
        coded = self.serving["coded_branches"]
        if coded:
            if coded_pixels is None and not image_bytes:
                size = self.description["input_size"]
                coded_pixels = np.zeros((0, len(coded), size, size, 3), np.float32)
            inputs[serving.CODED_INPUT] = tf.constant(coded_pixels, tf.float32)
        answer = self.signatures[serving.SIGNATURE](**inputs)
        return {name: value.numpy() for name, value in answer.items()}

    def coded_pixels(self, image: np.ndarray) -> np.ndarray:
        """The coded branches' pixels serving_default takes beside one photo's bytes, [C, S, S,
        3], made from the photo as the offline stage decodes it."""
        description = self.description
        return codecs.coded_pixels(
            image,
            branches_lib.other_codecs(self.serving["coded_branches"]),
            description["input_size"],
            description["central_crop"],
        )

    def _inputs(self, image: np.ndarray) -> list:
        """The endpoints' inputs for one decoded photo: the photo, and the other codecs'
        re-encodings made by the offline stage's function when the records hold any."""
        inputs = [tf.constant(image, tf.uint8)]
        other = branches_lib.other_codecs(self.description.get("record_branches", ()))
        if other:
            description = self.description
            inputs.append(
                codecs.coded_pixels(
                    image, other, description["input_size"], description["central_crop"]
                )
            )
        return inputs

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        return self._loaded.classify(*self._inputs(image))["probabilities"].numpy()

    def probabilities_of_pixels(self, pixels) -> np.ndarray:
        """[B, branches, S, S, 3] ladder pixels -> [B, classes]."""
        return self._loaded.classify_pixels(tf.constant(pixels, tf.float32))[
            "probabilities"
        ].numpy()

    @property
    def nodes(self) -> list[str]:
        """The nodes whose bottlenecks classify_bottlenecks takes (several under fbsd)."""
        return self.description.get("nodes") or [self.description["node"]]

    def probabilities_of_bottlenecks(self, bottlenecks) -> np.ndarray:
        """[B, branches, *node_shape] cached bottlenecks (under fbsd {node: them}) -> [B,
        classes]."""
        return self._loaded.classify_bottlenecks(tf.nest.map_structure(_floats, bottlenecks))[
            "probabilities"
        ].numpy()

    def classify_file(self, path: str) -> np.ndarray:
        return self.probabilities(ladder.load_rgb(path))

    def file_branch_pixels(self, path: str) -> np.ndarray:
        """An image file -> every record branch's CNN input [branches, S, S, 3], the ladder and the
        views, made as the offline stage makes them (raises BadImage where it quarantines)."""
        image = ladder.load_rgb(path)
        if hasattr(self._loaded, "branch_pixels"):
            return self._loaded.branch_pixels(*self._inputs(image)).numpy()
        description = self.description  # exported before views existed: the ladder alone
        return ladder.branch_images(
            tf.constant(image, tf.uint8),
            description["input_size"],
            description["qualities"],
            description["central_crop"],
        ).numpy()


def _floats(value) -> tf.Tensor:
    return tf.constant(value, tf.float32)
