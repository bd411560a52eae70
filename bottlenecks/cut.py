"""Cutting a backbone at its nodes: the multi-output extractor and the tail after a node."""

import keras

from bottlenecks import errors
from bottlenecks import registry


def pool_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer whose output is `pool`: the last global pooling, which feeds the classifier (its
    Keras name differs per backbone; ConvNeXt's classifier reads it through a LayerNormalization,
    which is then pool's layer), or an image feature vector model's SavedModel layer, which registry
    names `pool`."""
    named = [layer for layer in model.layers if layer.name == registry.POOL]
    if named:
        return named[0]
    layers = list(model.layers)
    # The last one: EfficientNet's squeeze-and-excitation blocks pool too.
    pools = [layer for layer in layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise errors.BackboneError(f"{model.name}: no global average pooling layer")
    after = layers[layers.index(pools[-1]) + 1 :]
    if after and isinstance(after[0], keras.layers.LayerNormalization):
        return after[0]
    return pools[-1]


def classifier_layer(model: keras.Model) -> keras.layers.Dense:
    """The decision layer after `pool` (the backbone's own ImageNet classifier)."""
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise errors.BackboneError(
            f"{model.name}: the last layer is {type(last).__name__}, not the classifier"
        )
    return last


def node_tensor(model: keras.Model, node: str):
    """The symbolic output of a catalogued node."""
    if node == registry.POOL:
        return pool_layer(model).output
    try:
        return model.get_layer(node).output
    except ValueError:
        raise errors.BackboneError(f"{model.name} has no layer named {node!r}") from None


def extractor(model: keras.Model, backbone: registry.Backbone, nodes) -> keras.Model:
    """One frozen model: raw pixels in [0, 255] -> {node: activation} for all nodes in one pass."""
    nodes = registry.check_nodes(backbone, nodes)
    inner = keras.Model(model.input, {node: node_tensor(model, node) for node in nodes})
    pixels = keras.Input(shape=model.input.shape[1:], name="pixels")
    outputs = inner(backbone.preprocess(pixels))
    frozen = keras.Model(pixels, outputs, name=f"{model.name}_bottlenecks")
    frozen.trainable = False
    return frozen


def node_shapes(model: keras.Model, nodes) -> dict[str, tuple[int, ...]]:
    """Per node, the activation shape of one image (no batch axis)."""
    return {node: tuple(int(size) for size in node_tensor(model, node).shape[1:]) for node in nodes}


def tail(model: keras.Model, node: str) -> keras.Model:
    """The backbone's layers after `node` up to `pool`, sharing the backbone's layer objects.

    Cutting by graph position keeps this independent of Keras's session-dependent inner layer
    names. It fails unless every path from the input to `pool` passes through `node`.
    """
    start = node_tensor(model, node)
    end = pool_layer(model).output
    if node == registry.POOL:  # nothing after pool but the classifier: the tail is the identity
        features = keras.Input(shape=start.shape[1:], name="pool")
        return keras.Model(features, features, name=f"tail_after_{node}")
    try:
        return keras.Model(start, end, name=f"tail_after_{node}")
    except ValueError:
        raise errors.BackboneError(
            f"{node!r} is not a block boundary of {model.name}: the layers after it also "
            f"read earlier tensors, so it cannot start a stage"
        ) from None
