"""The one place that builds a backbone: from an offline job's config, or from what records or an
export recorded (with the very weights the bottlenecks were made with).

bottlenecks.registry knows each backbone (its builder, preprocessing, nodes) and builds it from a
weights choice; this module turns the pipeline's configs and records into that choice: it seeds
random weights, copies a weights URL to a local file for Keras, and checks that recorded weights are
still there.
"""

import hashlib
import os

import keras
import tensorflow as tf

from bottlenecks import loading
from bottlenecks import registry
from pipeline import errors
from pipeline import seeding
from pipeline.config import offline as offline_config
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import writer


def spec(config: offline_config.ExtractConfig) -> registry.Backbone:
    """The job's backbone: a keras.applications one, or a hub: or savedmodel: model with its input
    range."""
    return registry.get_backbone(config.backbone, config.input_range)


def for_job(
    config: offline_config.ExtractConfig, backbone: registry.Backbone, input_size: int
) -> keras.Model:
    """The backbone with the job's weights; random ones come from config.seed, the same on every run
    and worker."""
    if (
        backbone.source == registry.KERAS
        and loading.weights_identity(config.weights)["kind"] == "none"
    ):
        with seeding.seeded(config.seed):
            return loading.build(backbone, config.weights, input_size)
    return loading.build(backbone, config.weights, input_size, local_weights(config.weights))


def check_weights_file(config: offline_config.ExtractConfig, backbone: registry.Backbone) -> None:
    """A --weights file that is not there is one line here, before anything reads it."""
    if (
        backbone.source == registry.KERAS
        and loading.weights_identity(config.weights)["kind"] == "file"
        and not fileio.isfile(config.weights)
    ):
        raise loading.missing_weights_file(config.weights, backbone)


def identity(config: offline_config.ExtractConfig, backbone: registry.Backbone) -> dict:
    """What the manifest records of the weights: their kind and, for files, where they are and their
    sha256."""
    if backbone.source == registry.KERAS:
        weights = loading.weights_identity(config.weights)
        if weights["kind"] == "file":
            weights["sha256"] = writer.file_sha256(config.weights)
        return weights
    weights = loading.model_identity(backbone)  # the SavedModel's files are its weights
    weights["sha256"] = directory_sha256(loading.model_path(backbone))
    return weights


def directory_sha256(directory: str) -> str:
    """One sha256 over a folder's files (a SavedModel): their relative paths and contents, in sorted
    order."""
    digest = hashlib.sha256()
    for root, folders, files in fileio.walk(directory):
        folders.sort()
        for name in sorted(files):
            path = fileio.join(root, name)
            digest.update(
                f"{fileio.relpath(path, directory)}\0{writer.file_sha256(path)}\n".encode()
            )
    return digest.hexdigest()


def from_manifest(manifest: manifest_lib.Manifest) -> tuple[registry.Backbone, keras.Model]:
    """The backbone the records were made with, and the model with their very weights."""
    backbone = registry.get_backbone(manifest.backbone, manifest.input_range)
    model = from_identity(
        manifest.backbone,
        manifest.weights,
        manifest.input_size,
        manifest.weights_seed,
        manifest.input_range,
    )
    return backbone, model


def from_identity(
    name: str, weights: dict, input_size: int, seed: int = 0, input_range=None
) -> keras.Model:
    """The backbone with the very weights some bottlenecks were made with, from their recorded
    identity.

    weights is what `identity` recorded; random weights are remade from the seed they were drawn
    with.
    """
    backbone = registry.get_backbone(name, input_range)
    if backbone.source == registry.SAVEDMODEL and not tf.io.gfile.isdir(backbone.location):
        raise errors.UserError(
            f"the records were made with the SavedModel {backbone.location}, which is gone; "
            f"put it back (the sha256 of its files is {weights.get('sha256')})"
        )
    if backbone.source != registry.KERAS:
        return loading.build(backbone, None, input_size)
    if weights["kind"] == "none":
        with seeding.seeded(seed):
            return loading.build(backbone, "none", input_size)
    if weights["kind"] == "file":
        source = weights["path"]
        if not os.path.isfile(local_weights(weights) or source):
            raise errors.UserError(
                f"the records were made with weights {source}, which is gone; "
                f"put it back (its sha256 is {weights.get('sha256')})"
            )
    else:
        source = "imagenet"
    return loading.build(backbone, source, input_size, local_weights(weights))


def local_weights(weights: str | dict | None) -> str | None:
    """The local copy Keras loads a --weights URL from (Keras reads local files only), made once per
    process.

    weights is the flag's value or the identity a manifest records. None for imagenet, none, local
    files, which Keras reads as they are, and for a URL that is not there, which the registry then
    reports.
    """
    if isinstance(weights, dict):
        weights = weights.get("path") if weights.get("kind") == "file" else None
    if weights is None or not fileio.is_remote(weights) or not fileio.isfile(weights):
        return None
    return fileio.local_copy(weights)
