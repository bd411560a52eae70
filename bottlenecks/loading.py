"""Building a backbone with its weights: ImageNet's through Keras's download and cache (offline: a
message naming the file to place where), a weights file, random ones, or a hub: or savedmodel:
model's own; and what the manifest records of them."""

import os

import keras

from bottlenecks import errors
from bottlenecks import registry
from bottlenecks import savedmodel


def build(
    backbone: registry.Backbone,
    weights: str | None,
    input_size: int | None = None,
    weights_file: str | None = None,
) -> keras.Model:
    """Builds the full backbone (classifier included) with `weights` = imagenet | PATH | none.

    A hub: or savedmodel: backbone carries its own weights (weights None) and ends at pool. Keras
    loads only local files: for weights given as a URL, weights_file is the local copy to load.
    """
    size = registry.check_input_size(backbone, input_size)
    if backbone.source != registry.KERAS:
        if weights is not None:
            raise errors.BackboneError(
                f"--weights does not apply to {backbone.name}: the SavedModel carries its own; "
                f"leave --weights out"
            )
        model = savedmodel.feature_vector_model(
            model_path(backbone), backbone.name, size, name=registry.POOL
        )
        model.trainable = False
        return model
    weights_kind = weights_identity(weights)["kind"]
    if weights_kind == "imagenet" and size != backbone.default_input_size:
        # Keras refuses a non-default input size with its ImageNet top; the weights fit any size.
        model = _build_imagenet_any_size(backbone, size)
    elif weights_kind == "imagenet":
        model = _download_guard(backbone, lambda: backbone.builder(weights="imagenet"))
    else:
        model = backbone.builder(weights=None, input_shape=(size, size, 3))
        if weights_kind == "file":
            _load_weights_file(model, weights, weights_file or weights, backbone)
    model.trainable = False
    return model


def _build_imagenet_any_size(backbone: registry.Backbone, size: int) -> keras.Model:
    reference = _download_guard(backbone, lambda: backbone.builder(weights="imagenet"))
    model = backbone.builder(weights=None, input_shape=(size, size, 3))
    model.set_weights(reference.get_weights())
    return model


def _download_guard(backbone: registry.Backbone, build_call):
    try:
        return build_call()
    except Exception as error:  # Keras wraps URL and socket errors in a bare Exception
        cache = os.path.join(os.path.expanduser("~"), ".keras", "models", backbone.imagenet_file)
        raise errors.BackboneError(
            f"could not obtain the ImageNet weights of {backbone.name} ({error}). "
            f"Without internet, download {backbone.imagenet_url} elsewhere and place it at "
            f"{cache}, or pass --weights PATH to a weights file for keras.applications "
            f"(or --weights none for random weights)."
        ) from None


def missing_weights_file(path: str, backbone: registry.Backbone) -> errors.BackboneError:
    """The one-line error for a --weights file that is not there."""
    return errors.BackboneError(
        f"--weights {path}: no such file; pass imagenet, none or the path "
        f"of a {backbone.name} weights file"
    )


def _load_weights_file(
    model: keras.Model, path: str, local_path: str, backbone: registry.Backbone
) -> None:
    if not os.path.isfile(local_path):
        raise missing_weights_file(path, backbone)
    try:
        model.load_weights(local_path)
    except Exception as error:
        raise errors.BackboneError(
            f"--weights {path} does not fit {backbone.name} with the classifier "
            f"({type(error).__name__}: {error})"
        ) from None


def model_path(backbone: registry.Backbone) -> str:
    """The local SavedModel folder of a savedmodel: or hub: backbone (a hub model is downloaded
    once, then cached)."""
    if backbone.source == registry.HUB:
        return savedmodel.resolve_hub(backbone.location)
    return savedmodel.check_directory(backbone.location)


def model_identity(backbone: registry.Backbone) -> dict:
    """What the manifest records of a savedmodel: or hub: model in place of weights (the caller adds
    a checksum of model_path's files). A hub model is its handle: where the cache keeps it may
    change."""
    if backbone.source == registry.HUB:
        return {"kind": registry.HUB, "handle": backbone.location}
    return {"kind": registry.SAVEDMODEL, "path": backbone.location}


def weights_identity(weights: str) -> dict:
    """What the manifest records of the weights: their kind, and the file's path and checksum."""
    if weights in (None, "none", "None"):
        return {"kind": "none"}
    if weights == "imagenet":
        return {"kind": "imagenet"}
    return {"kind": "file", "path": weights if _is_url(weights) else os.path.abspath(weights)}


def _is_url(path: str) -> bool:
    """gs://, s3://, ...: kept as given, where a local path is made absolute."""
    return "://" in path
