"""A multi-level head after FBSD on the cached maps of several nodes of a frozen backbone.

FBSD: J. Song and R. Yang, "Feature Boosting, Suppression, and Diversification for Fine-Grained
Visual Classification", IJCNN 2021, arXiv:2103.02782. The formulas below follow the authors' code,
github.com/chaomaer/FBSD (backbone.py: FSBM; model.py: FDM, TopkPool, FBSD; train.py: the loss).

    level i: cached map X_i [B, h_i, w_i, c_i], nodes ordered shallow to deep
    FBSM, boosting only     s = ReLU(BN(Conv1x1_{c_i -> 1}(X_i)))                  [B, h_i, w_i, 1]
                            a_k = mean of s over strip k, k = 1..K (K bands of rows)
                            b = softmax_k(a)                                                [B, K]
                            X_i <- X_i + alpha * b_{strip(row)} * X_i
    projection              P_i = ReLU(BN(Conv3x3_{C -> C}(ReLU(BN(Conv1x1_{c_i -> C}(X_i))))))
    FDM, every pair i < j   on P_i, P_j flattened to positions x channels [S_i, C], [S_j, C]:
                            A = -n(P_i) n(P_j)^T, n() scaling each position to unit L2 norm
                            P_{j<-i} = softmax_over_S_i(A)^T P_i                     [S_j, C]
                            P_{i<-j} = softmax_over_S_j(A) P_j                       [S_i, C]
                            D_i = P_i + diversity * sum_{j != i} P_{i<-j}   (from undiversified P)
    top-k pooling           f_i[c] = mean of the top_k largest D_i[:, c] over positions    [B, C]
    classifiers             logits_i = Dense(ELU(BN(Dense_C(BN(f_i)))))  per level,
                            concat_logits the same on [f_1, ..., f_L]
    output                  logits = sum_i logits_i + concat_logits

FDM's affinity is a negative cosine similarity, so every position gathers the other level's least
similar positions: what the other level saw and this one did not. That is the "semantically
complementary" information of the paper; the module has no weights.

Where this differs from the authors' code:
  * no suppression. Their FBSM also scales the most important strip by beta = 0.5 in the map fed to
    the next backbone stage; the cached maps were made by a frozen backbone without it.
  * strips of unequal height are allowed: row r of h belongs to strip floor(r * K / h). Their code
    needs h divisible by K (K = 8, 4, 2 for ResNet-50's three stages at 448 px: 7 rows a strip,
    which `strips=(8, 4, 2)` reproduces).
  * the strip scorer's 1x1 convolution and BatchNorm run once on the whole map, then the score is
    averaged within each strip; theirs run on each strip apart, so BatchNorm's batch statistics are
    per strip in training. The convolution is pointwise, so only those statistics differ.
  * one width `channels` for the projection and the classifiers' hidden layer; theirs is 512 for the
    1x1 convolution and the hidden layer, 1024 after the 3x3 convolution.
  * top_k defaults to 4 positions (theirs: 5) and may be a fraction of each level's positions.
  * `diversity` = 0.001 is their FDM factor round(1 / (28 * 28), 3) times their gamma = 1.
  * their loss is 2 * sum_i CE(logits_i) + CE(concat_logits), with predictions from the summed
    logits; `per_example_loss` gives that, or the cross-entropy of the sum alone.
"""

import itertools
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from pipeline import errors

PACKAGE = "fbsd"
FEATURES_NAME = "features"
# The authors' FDM factor round(1 / (28 * 28), 3), times their gamma = 1.
DIVERSITY = 0.001
# Strips per level and positions top-k pooling averages, at most (the authors': 8, 4, 2 strips for
# ResNet-50's three stages at 448 px; top 5 positions).
STRIPS = 4
TOP_K = 4
# train.py of the authors' code weighs each level's cross-entropy twice the concat classifier's.
LEVEL_LOSS_WEIGHT = 2.0
# An input's name keeps these characters of its node's and turns any other into "_" (Keras refuses
# "/" in a name; the rest is caution).
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-]")


def input_name(node: str) -> str:
    """The Keras name of the input that takes `node`'s maps."""
    return _NAME_CHARACTERS.sub("_", node)


def input_signature(node_shapes: dict[str, tuple[int, int, int]]) -> dict:
    """{node: tf.TensorSpec [None, h, w, c]}, the model's input for an export endpoint; a serving
    signature then names each input `input_name(node)`."""
    return {
        node: tf.TensorSpec((None,) + tuple(shape), tf.float32, name=input_name(node))
        for node, shape in node_shapes.items()
    }


def strip_membership(height: int, strips: int) -> np.ndarray:
    """[height, strips] one-hot: row r belongs to strip floor(r * strips / height)."""
    if not 1 <= strips <= height:
        raise errors.UserError(f"strips must be in [1, {height}] for a map {height} rows high")
    rows = np.arange(height)
    return np.eye(strips, dtype=np.float32)[rows * strips // height]


def strip_importance(score_map, strips: int):
    """FBSM's importance b [B, strips]: the softmax over strips of the mean score in each strip.

    score_map: [B, h, w, 1], the scorer's output.
    """
    membership = strip_membership(int(score_map.shape[1]), strips)
    row_scores = keras.ops.mean(score_map, axis=(2, 3))
    strip_means = keras.ops.matmul(row_scores, membership / membership.sum(axis=0))
    return keras.ops.softmax(strip_means, axis=-1)


def boost(maps, importance, alpha: float):
    """FBSM's boosting: maps + alpha * importance[strip of the row] * maps.

    maps [B, h, w, c]; importance [B, strips], each row summing to one: a one-hot row scales that
    strip by 1 + alpha and leaves the others as they are.
    """
    membership = strip_membership(int(maps.shape[1]), int(importance.shape[-1]))
    row_weights = keras.ops.matmul(importance, membership.T)
    return maps * (1.0 + alpha * row_weights[:, :, None, None])


def _unit_positions(flat):
    # torch's F.normalize floors the norm; flooring its square keeps the gradient of a zero vector
    # (every ReLU off at a position) finite, where sqrt's would be 0 * inf.
    square_norm = keras.ops.sum(keras.ops.square(flat), axis=-1, keepdims=True)
    return flat * keras.ops.rsqrt(keras.ops.maximum(square_norm, 1e-12))


def diversify_pair(first, second):
    """FDM on two levels' maps flattened to [B, S, C] and [B, M, C]: (first's part gathered from
    second [B, S, C], second's part gathered from first [B, M, C])."""
    affinity = -keras.ops.einsum("bsc,bmc->bsm", _unit_positions(first), _unit_positions(second))
    first_from_second = keras.ops.einsum(
        "bsm,bmc->bsc", keras.ops.softmax(affinity, axis=2), second
    )
    second_from_first = keras.ops.einsum("bsm,bsc->bmc", keras.ops.softmax(affinity, axis=1), first)
    return first_from_second, second_from_first


@keras.saving.register_keras_serializable(package=PACKAGE)
class StripBoost(keras.layers.Layer):
    """FBSM's boosting of a map [B, h, w, c] by its scorer's output [B, h, w, 1]; no weights."""

    def __init__(self, strips: int, alpha: float, **kwargs):
        super().__init__(**kwargs)
        self.strips = int(strips)
        self.alpha = float(alpha)

    def call(self, inputs):
        maps, score_map = inputs
        return boost(maps, strip_importance(score_map, self.strips), self.alpha)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "strips": self.strips, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Diversify(keras.layers.Layer):
    """FDM over every pair of levels' maps [B, h_i, w_i, C] (common C); no weights."""

    def __init__(self, diversity: float = DIVERSITY, **kwargs):
        super().__init__(**kwargs)
        self.diversity = float(diversity)

    def call(self, maps):
        shapes = [tuple(int(size) for size in level.shape[1:]) for level in maps]
        flat = [keras.ops.reshape(level, (-1, h * w, c)) for level, (h, w, c) in zip(maps, shapes)]
        gathered = [keras.ops.zeros_like(level) for level in flat]
        for first in range(len(flat)):
            for second in range(first + 1, len(flat)):
                from_second, from_first = diversify_pair(flat[first], flat[second])
                gathered[first] = gathered[first] + from_second
                gathered[second] = gathered[second] + from_first
        return [
            keras.ops.reshape(level + self.diversity * extra, (-1,) + shape)
            for level, extra, shape in zip(flat, gathered, shapes)
        ]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {**super().get_config(), "diversity": self.diversity}


def top_k_pool(maps, k: int):
    """[B, h, w, c] -> [B, c]: per channel, the mean of the k largest values over positions."""
    h, w, c = (int(size) for size in maps.shape[1:])
    by_channel = keras.ops.transpose(keras.ops.reshape(maps, (-1, h * w, c)), (0, 2, 1))
    values, _ = keras.ops.top_k(by_channel, k)
    return keras.ops.mean(values, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TopKPool(keras.layers.Layer):
    """Global top-k pooling, [B, h, w, c] -> [B, c]; no weights."""

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, maps):
        return top_k_pool(maps, self.k)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "k": self.k}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Stack(keras.layers.Layer):
    """[B, classes] tensors -> [B, len, classes]."""

    def call(self, tensors):
        return keras.ops.stack(tensors, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], len(input_shape)) + tuple(input_shape[0][1:])


def positions_pooled(top_k: int | float, height: int, width: int) -> int:
    """How many positions top-k pooling averages on an h x w map: top_k itself, or a fraction in
    (0, 1) of the positions (at least one)."""
    positions = height * width
    if isinstance(top_k, float) and 0 < top_k < 1:
        return max(1, round(top_k * positions))
    if top_k != int(top_k) or not 1 <= top_k <= positions:
        raise errors.UserError(
            f"top_k must be a whole number in [1, {positions}] or a fraction in (0, 1) for a "
            f"{height}x{width} map, got {top_k}"
        )
    return int(top_k)


def _per_level(value, levels: int, what: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != levels:
            raise errors.UserError(f"{what} has {len(value)} values for {levels} levels")
        return tuple(value)
    return (value,) * levels


def fitted(node_shapes: dict) -> dict:
    """build()'s strips and top_k for these maps: STRIPS and TOP_K where a level is large enough,
    else as many as it has rows and positions (the trainer's settings; small maps in tests)."""
    shapes = [tuple(int(size) for size in shape) for shape in node_shapes.values()]
    return {
        "strips": tuple(min(STRIPS, height) for height, _, _ in shapes),
        "top_k": tuple(min(TOP_K, height * width) for height, width, _ in shapes),
    }


def _check(node_shapes: dict, num_classes: int, channels: int) -> None:
    if not node_shapes:
        raise errors.UserError("FBSD needs at least one node")
    for node, shape in node_shapes.items():
        if len(shape) != 3 or min(shape) < 1:
            raise errors.UserError(f"node {node!r} must have a map shape (h, w, c), got {shape}")
    names = [input_name(node) for node in node_shapes]
    if len(set(names)) != len(names):
        raise errors.UserError(f"nodes {list(node_shapes)} give clashing input names {names}")
    if num_classes < 1 or channels < 1:
        raise errors.UserError(
            f"num_classes and channels must be at least 1, got {num_classes} and {channels}"
        )


def _classifier(channels: int, num_classes: int, seeds, name: str) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.BatchNormalization(),
            keras.layers.Dense(
                channels, kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds))
            ),
            keras.layers.BatchNormalization(),
            keras.layers.ELU(),
            keras.layers.Dense(
                num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds))
            ),
        ],
        name=name,
    )


def _convolution(filters: int, size: int, seeds, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        size,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)),
        name=name,
    )


def build(
    node_shapes: dict[str, tuple[int, int, int]],
    num_classes: int,
    *,
    channels: int = 512,
    strips: int | tuple[int, ...] = STRIPS,
    alpha: float = 0.5,
    top_k: int | float | tuple = TOP_K,
    diversity: float = DIVERSITY,
    seed: int = 0,
) -> keras.Model:
    """The FBSD head on the maps of `node_shapes` (ordered shallow to deep; see the module
    docstring).

    Input: {node: float32 [B, h, w, c]}, the input named `input_name(node)`. Output: {"logits":
    [B, classes] (the sum of the others), "level_logits": [B, levels, classes], "concat_logits":
    [B, classes], "features"}. strips: one count for every level or one per level. top_k:
    positions, or a fraction of each level's. diversity: FDM's scale (0 turns FDM off). The output
    "features" [B, levels * channels] is the pooled features the concat classifier reads (what a
    gate over branches sees).
    """
    _check(node_shapes, num_classes, channels)
    levels = len(node_shapes)
    level_strips = _per_level(strips, levels, "strips")
    level_top_k = _per_level(top_k, levels, "top_k")
    # One seed per initialiser: the same seed twice would give correlated kernels.
    seeds = itertools.count(seed * 1000)
    inputs, projected, pool_sizes = {}, [], []
    for level, (node, shape) in enumerate(node_shapes.items()):
        height, width, _ = (int(size) for size in shape)
        strip_membership(height, int(level_strips[level]))  # raises for an impossible count
        pool_sizes.append(positions_pooled(level_top_k[level], height, width))
        prefix = f"level{level}"
        maps = keras.Input(shape=tuple(shape), name=input_name(node))
        inputs[node] = maps
        score = _convolution(1, 1, seeds, f"{prefix}_strip_score")(maps)
        score = keras.layers.BatchNormalization(name=f"{prefix}_strip_score_bn")(score)
        score = keras.layers.ReLU(name=f"{prefix}_strip_score_relu")(score)
        boosted = StripBoost(level_strips[level], alpha, name=f"{prefix}_boost")([maps, score])
        hidden = boosted
        for size in (1, 3):
            hidden = _convolution(channels, size, seeds, f"{prefix}_conv{size}x{size}")(hidden)
            hidden = keras.layers.BatchNormalization(name=f"{prefix}_conv{size}x{size}_bn")(hidden)
            hidden = keras.layers.ReLU(name=f"{prefix}_conv{size}x{size}_relu")(hidden)
        projected.append(hidden)
    diversified = Diversify(diversity, name="diversify")(projected) if levels > 1 else projected
    pooled = [
        TopKPool(k, name=f"level{level}_top_k")(maps)
        for level, (k, maps) in enumerate(zip(pool_sizes, diversified))
    ]
    level_logits = [
        _classifier(channels, num_classes, seeds, f"level{level}_classifier")(features)
        for level, features in enumerate(pooled)
    ]
    joined = (
        keras.layers.Concatenate(name=FEATURES_NAME)(pooled)
        if levels > 1
        else keras.layers.Identity(name=FEATURES_NAME)(pooled[0])
    )
    concat_logits = _classifier(channels * levels, num_classes, seeds, "concat_classifier")(joined)
    outputs = {
        "logits": keras.layers.Add(name="logits")(level_logits + [concat_logits]),
        "level_logits": Stack(name="level_logits")(level_logits),
        "concat_logits": concat_logits,
        "features": joined,
    }
    return functional(inputs, outputs, "fbsd")


def functional(inputs: dict, outputs, name: str) -> keras.Model:
    """keras.Model on dict inputs keyed by node (whose Keras names are input_name(node))."""
    with warnings.catch_warnings():
        # Keras matches an input dict by key, so the inputs' names need only be ones it accepts.
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        return keras.Model(inputs, outputs, name=name)


def per_example_loss(model_outputs: dict, labels, *, own_losses: bool = True):
    """[B] losses. own_losses: the authors' 2 * sum_i CE(logits_i) + CE(concat_logits); else the
    cross-entropy of the summed logits."""

    def cross_entropy(logits):
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    if not own_losses:
        return cross_entropy(model_outputs["logits"])
    level_logits = model_outputs["level_logits"]
    loss = cross_entropy(model_outputs["concat_logits"])
    for level in range(int(level_logits.shape[1])):
        loss = loss + LEVEL_LOSS_WEIGHT * cross_entropy(level_logits[:, level])
    return loss
