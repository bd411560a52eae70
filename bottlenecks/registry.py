"""The supported backbones: builder, preprocessing, input sizes, node catalogue and weight loading.

Backbones come from three sources: a keras.applications name (`inception_v3`, ...),
`savedmodel:PATH` (a TF2 SavedModel, in a local folder or at a URL such as gs://) and `hub:HANDLE`
(a TF-Hub or Kaggle Models handle, resolved and cached by tensorflow_hub). The last two are image
feature vector models: their one node is `pool`, and they have no ImageNet classifier.
"""

import collections.abc
import dataclasses
import functools
import os
import re
from typing import Callable

import keras

from bottlenecks import errors

POOL = "pool"  # the pooled feature vector that feeds the classifier, in every backbone
KERAS, SAVEDMODEL, HUB = "keras", "savedmodel", "hub"  # where a backbone comes from
FEATURE_VECTOR_PREFIXES = (f"{HUB}:", f"{SAVEDMODEL}:")
# What image feature vector models on TF-Hub usually take, unless --input-size and --input-range say
# otherwise.
FEATURE_VECTOR_INPUT_SIZE = 224
FEATURE_VECTOR_INPUT_RANGE = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Everything the pipeline needs to know about one pretrained CNN."""

    name: str  # a keras.applications name, or savedmodel:/absolute/path or hub:HANDLE
    builder: Callable[..., keras.Model] | None  # keras.applications only
    preprocess: Callable  # pixels in [0, 255] -> the backbone's input range
    default_input_size: int
    min_input_size: int
    imagenet_file: str | None  # what Keras caches in ~/.keras/models for weights="imagenet"
    imagenet_url: str | None
    nodes: tuple[str, ...]  # every node a user may cut at, input to output order
    # The thesis's block-by-block schedule (or a sensible one): the node each stage reads.
    default_stages: tuple[str, ...]
    # Thesis names of the blocks that the stages after the first unfreeze, for reports.
    thesis_block_names: dict = dataclasses.field(default_factory=dict)
    source: str = KERAS  # keras | savedmodel | hub
    location: str | None = None  # the SavedModel's folder or the hub handle
    input_range: tuple[float, float] | None = (
        None  # savedmodel and hub: the pixel values the model expects
    )
    has_classifier: bool = (
        True  # the ImageNet decision layer after pool (feature vector models have none)
    )


def _resnet50_v2_nodes() -> tuple[str, ...]:
    blocks_per_stage = {2: 3, 3: 4, 4: 6, 5: 3}
    nodes = [
        f"conv{stage}_block{block}_out"
        for stage, count in blocks_per_stage.items()
        for block in range(1, count + 1)
    ]
    return tuple(nodes) + ("post_relu", POOL)


def _mobilenet_v2_nodes() -> tuple[str, ...]:
    # Blocks whose stride is 1 and whose width does not change end in a residual `add`.
    residual_blocks = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}
    nodes = ["expanded_conv_project_BN"]
    for block in range(1, 17):
        nodes.append(f"block_{block}_expand_relu")
        nodes.append(
            f"block_{block}_add" if block in residual_blocks else f"block_{block}_project_BN"
        )
    return tuple(nodes) + ("out_relu", POOL)


_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# The smallest input every EfficientNet and ConvNeXt takes: five halvings (ConvNeXt: a stride-4 stem
# and three halvings) leave a 1x1 map.
_MODERN_MIN_INPUT_SIZE = 32


class _Catalogue(collections.abc.Sequence):
    """Node names read off the Keras model itself the first time they are needed, for backbones
    whose number of blocks depends on the variant (EfficientNet B0 has 16, B7 55): the names are
    then Keras's own. Reading them builds the model once with random weights at its smallest input
    (a second or two; the names are kept for the process)."""

    def __init__(self, read: Callable[[], tuple[str, ...]]):
        self._read = read

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(self._read())

    def __getitem__(self, index):
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(self._names)


# An EfficientNet (V1 or V2) block ends at its residual add, else at its projection's batch norm, or
# after the activation a fused block without expansion applies to it.
_EFFICIENTNET_BLOCK_END = re.compile(r"^(block\d+[a-z]+)_(project_bn|project_activation|add)$")


def _efficientnet_nodes(builder) -> tuple[str, ...]:
    """stem_activation, every block's output in order, top_activation (the 1x1 head convolution's
    output, the last map), pool."""
    model = builder(weights=None, input_shape=(_MODERN_MIN_INPUT_SIZE,) * 2 + (3,))
    ends = {}
    for layer in model.layers:
        match = _EFFICIENTNET_BLOCK_END.match(layer.name)
        if match:
            ends[match.group(1)] = layer.name  # a block's last match is its output
    return ("stem_activation", *ends.values(), "top_activation", POOL)


def _efficientnet(name: str, builder, keras_name: str, input_size: int, weights_url: str):
    """An EfficientNet (V1 or V2): its own rescaling and normalisation layers take pixels in
    [0, 255], so the ladder's pixels go in as they are."""
    nodes = _Catalogue(functools.partial(_efficientnet_nodes, builder))
    return Backbone(
        name=name,
        builder=builder,
        preprocess=keras.applications.efficientnet.preprocess_input,  # the identity
        default_input_size=input_size,
        min_input_size=_MODERN_MIN_INPUT_SIZE,
        imagenet_file=f"{keras_name}.h5",
        imagenet_url=f"{weights_url}{keras_name}.h5",
        nodes=nodes,
        # The last two blocks, one stage each (the head convolution trains with the last block).
        default_stages=_Catalogue(lambda: (POOL, nodes[-3], nodes[-4])),
    )


def _convnext(name: str, builder, keras_name: str):
    """A ConvNeXt: its own normalisation layer takes pixels in [0, 255]. Its blocks end in unnamed
    additions, so its nodes are the stem and the downsampling layers that open stages 1-3 (Keras's
    names); pool is the normalised pooled feature its classifier reads."""
    stem = f"{keras_name}_stem"
    downsampling = tuple(f"{keras_name}_downsampling_block_{index}" for index in range(3))
    return Backbone(
        name=name,
        builder=builder,
        preprocess=keras.applications.convnext.preprocess_input,  # the identity
        default_input_size=224,
        min_input_size=_MODERN_MIN_INPUT_SIZE,
        imagenet_file=f"{keras_name}.h5",
        imagenet_url=f"{_KERAS_WEIGHTS}convnext/{keras_name}.h5",
        nodes=(stem, *downsampling, POOL),
        # The last stage, then the one before it.
        default_stages=(POOL, downsampling[2], downsampling[1]),
    )


_EFFICIENTNET_WEIGHTS = "https://storage.googleapis.com/keras-applications/"
_EFFICIENTNET_V2_WEIGHTS = _KERAS_WEIGHTS + "efficientnet_v2/"
# name: (builder, Keras's model name, the input size it was trained at)
_EFFICIENTNETS = {
    **{
        f"efficientnet_b{index}": (
            getattr(keras.applications, f"EfficientNetB{index}"),
            f"efficientnetb{index}",
            size,
            _EFFICIENTNET_WEIGHTS,
        )
        for index, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))
    },
    **{
        f"efficientnet_v2_{variant}": (
            getattr(keras.applications, f"EfficientNetV2{variant.upper()}"),
            f"efficientnetv2-{variant}",
            size,
            _EFFICIENTNET_V2_WEIGHTS,
        )
        for variant, size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384))
    },
}

BACKBONES = {
    "inception_v3": Backbone(
        name="inception_v3",
        builder=keras.applications.InceptionV3,
        preprocess=keras.applications.inception_v3.preprocess_input,
        default_input_size=299,
        min_input_size=75,
        imagenet_file="inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        imagenet_url=_KERAS_WEIGHTS
        + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        nodes=tuple(f"mixed{index}" for index in range(11)) + (POOL,),
        default_stages=(POOL, "mixed9", "mixed8", "mixed7"),
        thesis_block_names={
            POOL: "fully connected layer",
            "mixed9": "mixed_10",
            "mixed8": "mixed_9",
            "mixed7": "mixed_8",
        },
    ),
    "resnet50_v2": Backbone(
        name="resnet50_v2",
        builder=keras.applications.ResNet50V2,
        preprocess=keras.applications.resnet_v2.preprocess_input,
        default_input_size=224,
        min_input_size=32,
        imagenet_file="resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
        imagenet_url=_KERAS_WEIGHTS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
        nodes=_resnet50_v2_nodes(),
        default_stages=(POOL, "conv4_block6_out"),
        thesis_block_names={POOL: "logits", "conv4_block6_out": "block 4"},
    ),
    "mobilenet_v2": Backbone(
        name="mobilenet_v2",
        builder=keras.applications.MobileNetV2,
        preprocess=keras.applications.mobilenet_v2.preprocess_input,
        default_input_size=224,
        min_input_size=32,
        imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        imagenet_url=_KERAS_WEIGHTS
        + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        nodes=_mobilenet_v2_nodes(),
        # The last two inverted-residual blocks and the 1x1 head conv, one stage each.
        default_stages=(POOL, "block_16_project_BN", "block_15_add"),
        thesis_block_names={
            POOL: "fully connected layer",
            "block_16_project_BN": "out_conv",
            "block_15_add": "block_16",
        },
    ),
    **{name: _efficientnet(name, *settings) for name, settings in _EFFICIENTNETS.items()},
    "convnext_tiny": _convnext("convnext_tiny", keras.applications.ConvNeXtTiny, "convnext_tiny"),
    "convnext_small": _convnext(
        "convnext_small", keras.applications.ConvNeXtSmall, "convnext_small"
    ),
}


def get_backbone(name: str, input_range=None) -> Backbone:
    """Looks a backbone up by name or source (hub:HANDLE, savedmodel:PATH), failing with the valid
    choices.

    input_range: the pixel values a hub: or savedmodel: model expects, as (low, high); None: (0, 1).
    """
    if name.startswith(FEATURE_VECTOR_PREFIXES):
        source, location = name.split(":", 1)
        return _feature_vector_backbone(source, location, input_range)
    if name not in BACKBONES:
        raise errors.BackboneError(
            f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}, hub:HANDLE or "
            f"savedmodel:PATH"
        )
    if input_range is not None:
        raise errors.BackboneError(
            f"--input-range is for hub: and savedmodel: backbones; {name} brings its own "
            "preprocessing"
        )
    return BACKBONES[name]


def check_input_range(input_range) -> tuple[float, float]:
    """(low, high) of a feature vector model's pixel values; None: FEATURE_VECTOR_INPUT_RANGE."""
    values = (
        FEATURE_VECTOR_INPUT_RANGE
        if input_range is None
        else tuple(float(value) for value in input_range)
    )
    if len(values) != 2 or not values[0] < values[1]:
        raise errors.BackboneError(
            f"--input-range must be two numbers LOW,HIGH with LOW < HIGH, got "
            f"{','.join(f'{value:g}' for value in values)}"
        )
    return values


def _feature_vector_backbone(source: str, location: str, input_range) -> Backbone:
    if not location:
        raise errors.BackboneError(
            f"--backbone {source}: needs a {'handle' if source == HUB else 'path'} after the colon"
        )
    # Recorded in the manifest: the trainer finds a local SavedModel from anywhere (a URL stays).
    if source == SAVEDMODEL and "://" not in location:
        location = os.path.abspath(os.path.expanduser(location))
    low, high = check_input_range(input_range)
    return Backbone(
        name=f"{source}:{location}",
        builder=None,
        preprocess=functools.partial(_scale_pixels, low=low, high=high),
        default_input_size=FEATURE_VECTOR_INPUT_SIZE,
        min_input_size=1,
        imagenet_file=None,
        imagenet_url=None,
        nodes=(POOL,),
        default_stages=(POOL,),
        source=source,
        location=location,
        input_range=(low, high),
        has_classifier=False,
    )


def _scale_pixels(pixels, low: float, high: float):
    """[0, 255] -> [low, high]."""
    return pixels * ((high - low) / 255.0) + low


def check_nodes(backbone: Backbone, nodes) -> tuple[str, ...]:
    """Returns the nodes in catalogue order, failing on any unknown name with the valid ones."""
    nodes = tuple(nodes)
    unknown = [node for node in nodes if node not in backbone.nodes]
    if unknown and backbone.source != KERAS:
        raise errors.BackboneError(
            f"unknown node(s) {', '.join(unknown)} for backbone {backbone.name}: an image feature "
            f"vector model has the one node {POOL} (a SavedModel does not expose its inner layers)"
        )
    if unknown:
        raise errors.BackboneError(
            f"unknown node(s) {', '.join(unknown)} for backbone {backbone.name}; "
            f"valid nodes are: {', '.join(backbone.nodes)}"
        )
    if not nodes:
        raise errors.BackboneError(
            f"no nodes given; valid nodes for {backbone.name} are: {', '.join(backbone.nodes)}"
        )
    return tuple(node for node in backbone.nodes if node in nodes)


def check_input_size(backbone: Backbone, input_size: int | None) -> int:
    size = backbone.default_input_size if input_size is None else int(input_size)
    if size < backbone.min_input_size:
        raise errors.BackboneError(
            f"--input-size {size} is too small for {backbone.name}: "
            f"it needs at least {backbone.min_input_size} px"
        )
    return size
