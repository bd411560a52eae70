"""The multi-quality topology: every branch through one shared tail, then the fusion and one
decision head.

bottlenecks [B, branches, *node_shape]
    -> one batched call of the backbone's own layers after the node   (shared weights)
    -> pooled features [B, branches, D]
    -> fusion (concat: one head over [B, branches * D]; shared/weighted/gated: the head on every
       branch, probabilities averaged; see pipeline.training.fusion)
    -> {"logits": [B, classes], ...}

Under --head fbsd the stage reads several nodes' cached maps {node: [B, branches, h, w, c]}: every
branch goes through the one FBSD head (pipeline.training.fbsd) and the fusion combines the branches'
logits (build_multi_level); nothing of the backbone trains.
"""

import keras
import numpy as np

from bottlenecks import cut
from bottlenecks import registry
from pipeline import errors
from pipeline.training import fbsd
from pipeline.training import fusion as fusion_lib


def build(
    backbone_model: keras.Model,
    node: str,
    num_branches: int,
    head: keras.layers.Layer,
    fusion: str = "concat",
    combiner: keras.layers.Layer | None = None,
    feature_size: int | None = None,
    family_ids=None,
) -> keras.Model:
    """The stage model reading `node`: trains (when unfrozen) everything after it, plus `head` (and
    `combiner`).

    feature_size: the width of the records at `pool`, when it is not the backbone's (autoencoder
    codes). family_ids: each branch's family (pipeline.branches.family_ids), for the family fusion.

    Its output is fusion.outputs()'s dict; "logits" is the prediction.
    """
    if node == registry.POOL and feature_size is not None:
        # Nothing after pool but the head, whose width is the records' (autoencoder codes are
        # narrower).
        bottlenecks = keras.Input(shape=(num_branches, feature_size), name="bottlenecks")
        features = bottlenecks
    else:
        tail = cut.tail(backbone_model, node)
        node_shape = tuple(int(size) for size in tail.input.shape[1:])
        bottlenecks = keras.Input(shape=(num_branches,) + node_shape, name="bottlenecks")
        # Branches share the tail, so they can go through it as one batch: the same result as eleven
        # calls, with one kernel launch per layer instead of eleven.
        flat = keras.ops.reshape(bottlenecks, (-1,) + node_shape)
        features = keras.ops.reshape(tail(flat), (-1, num_branches, int(tail.output.shape[-1])))
    outputs = fusion_lib.outputs(fusion, features, head, combiner, num_branches, family_ids)
    return keras.Model(bottlenecks, outputs, name=f"topology_from_{node}")


def build_multi_level(
    head: keras.Model,
    node_shapes: dict,
    num_branches: int,
    fusion: str = "shared",
    combiner: keras.layers.Layer | None = None,
    family_ids=None,
) -> keras.Model:
    """The stage model of a head on several nodes' maps (fbsd.build): input {node: [B, branches,
    *node_shape]} (input names fbsd.input_name(node)), output fusion.combine()'s dict plus each
    branch's "branch_level_logits" and "branch_concat_logits" (the head's own losses read them).

    The head sees every branch as an image of the batch; concat over one branch is that branch's
    head alone.
    """
    maps = {
        node: keras.Input(shape=(num_branches,) + tuple(shape), name=fbsd.input_name(node))
        for node, shape in node_shapes.items()
    }
    flat = {
        node: keras.ops.reshape(value, (-1,) + tuple(node_shapes[node]))
        for node, value in maps.items()
    }
    scored = head(flat)

    def per_branch(tensor):
        return keras.ops.reshape(tensor, (-1, num_branches) + tuple(tensor.shape[1:]))

    outputs = fusion_lib.combine(
        "shared" if fusion == "concat" else fusion,
        per_branch(scored["logits"]),
        per_branch(scored["features"]),
        combiner,
        num_branches,
        family_ids,
    )
    outputs["branch_level_logits"] = per_branch(scored["level_logits"])
    outputs["branch_concat_logits"] = per_branch(scored["concat_logits"])
    return fbsd.functional(maps, outputs, "topology_fbsd")


def unfreeze_tail(
    backbone_model: keras.Model, node: str, train_batchnorm: bool
) -> list[keras.layers.Layer]:
    """Makes the layers after `node` trainable (BatchNorm stays in inference mode unless asked)."""
    backbone_model.trainable = True  # the container must be trainable for its layers to be
    for layer in backbone_model.layers:
        layer.trainable = False
    tail_layers = [
        layer
        for layer in cut.tail(backbone_model, node).layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    for layer in tail_layers:
        # A frozen BatchNormalization runs in inference mode in Keras: moving statistics are kept.
        layer.trainable = train_batchnorm or not isinstance(layer, keras.layers.BatchNormalization)
    return tail_layers


def init_head_from_classifier(
    head: keras.layers.Layer,
    backbone_model: keras.Model,
    class_indices,
    original_position: int,
    num_branches: int,
) -> None:
    """Starts the decision layer at the backbone's own classifier (for these classes).

    concat: the original branch's slice gets the classifier, the others zeros, so stage 0 starts
    exactly at the stock model's accuracy. The other fusions apply one head to every branch: it
    becomes the classifier itself, so stage 0 starts at the stock model's mean over the branches.
    """
    if not isinstance(head, keras.layers.Dense):
        raise errors.UserError(
            "--head-init baseline starts a linear decision layer from the backbone's classifier; "
            "use --head linear, or --head-init random for an MLP head"
        )
    kernel, bias = (
        np.asarray(weight) for weight in cut.classifier_layer(backbone_model).get_weights()
    )
    feature_size = kernel.shape[0]
    if head.kernel.shape == (feature_size, len(class_indices)):  # one head for every branch
        head.set_weights([kernel[:, class_indices], bias[class_indices].astype(np.float32)])
        return
    if head.kernel.shape != (num_branches * feature_size, len(class_indices)):
        raise errors.UserError(
            f"the decision layer has shape {tuple(head.kernel.shape)}, expected "
            f"{(num_branches * feature_size, len(class_indices))}"
        )
    new_kernel = np.zeros(head.kernel.shape, np.float32)
    start = original_position * feature_size
    new_kernel[start : start + feature_size] = kernel[:, class_indices]
    head.set_weights([new_kernel, bias[class_indices].astype(np.float32)])


def check_stage(backbone: registry.Backbone, backbone_model: keras.Model, node: str) -> None:
    """A stage must be a catalogued node at a block boundary."""
    registry.check_nodes(backbone, [node])
    cut.tail(backbone_model, node)
