"""Image feature vector models from a TF2 SavedModel or TF-Hub, as one frozen Keras layer: images ->
[batch, D].

Two ways into a SavedModel are called: the object itself, as TF-Hub's TF2 models and
`tf.saved_model.save(obj)` of an object with a `__call__` tf.function write it, and the
`serving_default` signature, as `keras.Model.export` writes it. Keras 3 cannot wrap `hub.KerasLayer`
(a Keras 2 layer), so the loaded object is called directly. `keras.layers.TFSMLayer` does the same
for one endpoint named before loading; this layer loads once, picks the endpoint the model has, and
turns a one-entry output dict into its tensor. The loaded object is an attribute of the layer, so an
export that tracks the layer carries the model's variables and functions with it.
"""

import importlib.util
import inspect
import os
import tempfile

import keras
import tensorflow as tf

from bottlenecks import errors

SIGNATURE = "serving_default"
# tensorflow-hub 0.16 imports tf_keras (Keras 2) when tf.keras is Keras 3, and pkg_resources
# (setuptools < 82). tf-keras requires the full `tensorflow` distribution, so on tensorflow-cpu both
# come without their dependencies.
HUB_INSTALL = (
    'on tensorflow-cpu, pip install --no-deps "tensorflow-hub>=0.16.1,<0.17" '
    '"tf-keras>=2.21,<2.22" '
    '"setuptools<82"; with the gpu extra, pip install -e ".[gpu,hub]"'
)


def check_directory(path: str) -> str:
    """path, when it is a SavedModel's folder (a local one, or at a URL tf.io.gfile reads, as
    tf.saved_model does)."""
    if not tf.io.gfile.isdir(path):
        raise FileNotFoundError(
            f"--backbone savedmodel:{path}: no such directory; pass the folder of a TF2 "
            f"SavedModel (the one that holds saved_model.pb)"
        )
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise errors.BackboneError(
            f"--backbone savedmodel:{path} is not a SavedModel (it has no saved_model.pb); pass "
            "the folder that holds saved_model.pb"
        )
    return path


def hub_cache_dir() -> str:
    """Where tensorflow_hub caches what it downloads (its own default when TFHUB_CACHE_DIR is
    unset)."""
    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")


def resolve_hub(handle: str) -> str:
    """The local SavedModel folder of a TF-Hub or Kaggle Models handle, downloaded and cached by
    tensorflow_hub."""
    missing = [
        name for name in ("tensorflow_hub", "tf_keras") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise errors.BackboneError(
            f"--backbone hub:{handle} needs {' and '.join(missing)}: {HUB_INSTALL}; or download "
            "the model elsewhere, unpack it and pass --backbone savedmodel:DIR"
        )
    try:
        import tensorflow_hub
    except ImportError as error:  # e.g. pkg_resources, gone from setuptools 82
        raise errors.BackboneError(
            f"--backbone hub:{handle}: tensorflow_hub does not import ({error}): {HUB_INSTALL}"
        ) from None
    try:
        return check_directory(tensorflow_hub.resolve(handle))
    except Exception as error:  # URL, socket and file errors alike: all mean the model is not here
        raise errors.BackboneError(
            f"could not fetch hub:{handle} ({type(error).__name__}: {_first_line(error)}). "
            f"Without internet, download {handle}?tf-hub-format=compressed elsewhere, unpack the "
            ".tar.gz and pass --backbone "
            f"savedmodel:DIR, or set TFHUB_CACHE_DIR to a TF-Hub cache that holds the model "
            f"(the cache now is {hub_cache_dir()})"
        ) from None


class FeatureVector(keras.layers.Layer):
    """A loaded SavedModel as a frozen layer: images [B, S, S, 3] in the model's own value range ->
    [B, D]."""

    def __init__(self, path: str, label: str, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.label = label
        try:
            self.saved_model = tf.saved_model.load(path)
        except Exception as error:
            raise errors.BackboneError(
                f"{label}: cannot load the SavedModel in {path} ({type(error).__name__}: "
                f"{_first_line(error)})"
            ) from None
        self._function, self._keywords, self.image_spec = _endpoint(self.saved_model, label)

    def call(self, images):
        if self.image_spec is not None and self.image_spec.dtype != images.dtype:
            images = tf.cast(images, self.image_spec.dtype)
        outputs = self._function(images, **self._keywords)
        if isinstance(outputs, dict):
            if len(outputs) != 1:
                raise errors.BackboneError(
                    f"{self.label} returns {len(outputs)} outputs ({', '.join(sorted(outputs))}); "
                    "an image feature vector model returns one"
                )
            outputs = next(iter(outputs.values()))
        return outputs

    def declared_size(self) -> tuple[int, int] | None:
        """The image height and width the SavedModel was saved for, when it fixes them."""
        if self.image_spec is None or self.image_spec.shape.rank != 4:
            return None
        height, width = self.image_spec.shape[1:3]
        return (height, width) if height is not None and width is not None else None


def _endpoint(saved_model, label: str):
    """(function, keyword arguments, spec of its image input or None) of the way into a
    SavedModel."""
    if callable(saved_model):  # TF-Hub's TF2 models; tf.saved_model.save of an object with __call__
        function = saved_model.__call__
        arguments = inspect.getfullargspec(function)
        # Hub's image models take training=...: ask for inference, as hub.KerasLayer does.
        keywords = (
            {"training": False} if "training" in arguments.args + arguments.kwonlyargs else {}
        )
        specs = {
            spec
            for concrete in getattr(function, "concrete_functions", ())
            for spec in concrete.structured_input_signature[0][:1]
            if isinstance(spec, tf.TensorSpec)
        }
        return saved_model, keywords, specs.pop() if len(specs) == 1 else None
    if SIGNATURE in saved_model.signatures:  # keras.Model.export
        signature = saved_model.signatures[SIGNATURE]
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise errors.BackboneError(
                f"{label}: its {SIGNATURE} signature takes {len(inputs)} inputs "
                f"({', '.join(sorted(inputs))}); an image feature vector model takes one"
            )
        return signature, {}, next(iter(inputs.values()))
    raise errors.BackboneError(
        f"{label}: the SavedModel is not callable and has no {SIGNATURE} signature (it has: "
        f"{', '.join(saved_model.signatures) or 'none'}); save a callable object with "
        f"tf.saved_model.save, or the model with keras.Model.export"
    )


def feature_vector_model(path: str, label: str, input_size: int, name: str) -> keras.Model:
    """images [B, S, S, 3] in the model's value range -> the layer called `name` -> [B, D]."""
    layer = FeatureVector(path, label, name=name)
    declared = layer.declared_size()
    if declared is not None and declared != (input_size, input_size):
        raise errors.BackboneError(
            f"{label} takes {declared[0]}x{declared[1]} images, not {input_size}x{input_size}: "
            f"pass --input-size {declared[0]}"
        )
    images = keras.Input(shape=(input_size, input_size, 3), name="images")
    try:
        features = layer(images)
    except Exception as error:
        raise errors.BackboneError(
            f"{label} does not run on {input_size}x{input_size} images ({type(error).__name__}: "
            f"{_first_line(error)}); check --input-size"
        ) from None
    if len(features.shape) != 2:
        raise errors.BackboneError(
            f"{label} is not an image feature vector model: its output has shape "
            f"{tuple(features.shape)}, not (batch, features)"
        )
    return keras.Model(images, features, name="feature_vector_model")


def _first_line(error: Exception) -> str:
    """The first line of what went wrong, without the lines and terminal escapes Keras wraps errors
    in."""
    text = str(error).replace("\x1b[1m", "").replace("\x1b[0m", "")
    text = text.split("Error encountered:", 1)[-1]
    lines = [line.strip() for line in text.splitlines()]
    lines = [
        line for line in lines if line and not line.startswith("Exception encountered when calling")
    ]
    return lines[0] if lines else type(error).__name__
