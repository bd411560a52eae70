"""Views beside the ladder: the object crop, part crops inside it and the mirrored photo, as more
branches through the same frozen CNN (MMAL-Net's raw, object and part branches).

    object    MMAL-Net's AOLM on the backbone's own maps of the original branch: at two late nodes
              (view_nodes: the earlier, then the last) the channel sum above its mean; the largest
              8-connected component of the last map's mask, intersected with the earlier one's,
              bounds the object (the whole photo when that is empty). Cropped from the decoded photo
              at its own resolution, then resized for the CNN like any branch.
    partK     APPM: windows on the object crop's last map scored by their mean channel sum, greedy
              non-maximum suppression, the K best cropped from the object crop.
    hflip     the photo mirrored left to right.
    tcm       the photo with its smooth 8x8 blocks JPEG-quantised at a low quality and the others at
              a high one (pipeline.offline.tcm).

Every step is a TensorFlow op (pipeline.offline.view_ops), so the exported model computes the same
views from a raw image. The offline stage batches the backbone's passes (shard_work.BatchForward);
image_views() is the same computation for one image, for the export.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from bottlenecks import errors as backbone_errors
from bottlenecks import registry
from pipeline import branches as branches_lib
from pipeline.config import offline as offline_config
from pipeline.offline import ladder
from pipeline.offline import tcm as tcm_lib
from pipeline.offline import view_ops

# The two late nodes whose maps find the object, per backbone: the earlier, then the last.
DEFAULT_VIEW_NODES = {
    "mobilenet_v2": ("block_16_expand_relu", "out_relu"),
    "resnet50_v2": ("conv5_block2_out", "conv5_block3_out"),
    "inception_v3": ("mixed9", "mixed10"),
}
NMS_IOU = 0.25  # APPM's overlap threshold between kept part windows
VIEWS_CSV = "views.csv"  # per image: its object box and part windows, normalised to the photo
BOX_COLUMNS = ("y0", "x0", "y1", "x1")  # a box, normalised to the (centrally cropped) photo


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """Which views a records set holds, in branch order after the ladder: object, parts, hflip,
    tcm."""

    object: bool = False
    parts: int = 0
    hflip: bool = False
    tcm: tuple | None = None  # (low quality, high quality, block std threshold)

    @classmethod
    def parse(cls, views) -> "ViewSpec":
        """From --views (config.view_list's tuple: object, parts:K, hflip, tcm:LOW:HIGH:STD) or a
        manifest's spec."""
        spec = {"object": False, "parts": 0, "hflip": False, "tcm": None}
        for view in offline_config.view_list(",".join(views or ())):
            kind, _, count = view.partition(":")
            if kind == branches_lib.TCM:
                low, high, std = count.split(":")
                spec[kind] = (int(low), int(high), float(std))
            else:
                spec[kind] = int(count) if kind == branches_lib.PARTS else True
        return cls(**spec)

    def __bool__(self) -> bool:
        return self.object or self.parts > 0 or self.hflip or self.tcm is not None

    @property
    def first_pass(self) -> int:
        """The views made from the photo alone, which go through the CNN with the ladder."""
        return int(self.hflip) + int(self.tcm is not None)

    @property
    def needs_box(self) -> bool:
        return self.object or self.parts > 0

    @property
    def names(self) -> tuple[str, ...]:
        """The views' branch names, in order."""
        return (
            ((branches_lib.OBJECT,) if self.object else ())
            + tuple(f"part{number}" for number in range(1, self.parts + 1))
            + ((branches_lib.HFLIP,) if self.hflip else ())
            + ((branches_lib.TCM,) if self.tcm is not None else ())
        )

    @property
    def text(self) -> tuple[str, ...]:
        """As --views spells it."""
        return (
            (("object",) if self.object else ())
            + ((f"parts:{self.parts}",) if self.parts else ())
            + (("hflip",) if self.hflip else ())
            + ((f"tcm:{self.tcm[0]}:{self.tcm[1]}:{self.tcm[2]:g}",) if self.tcm else ())
        )

    @property
    def box_columns(self) -> tuple[str, ...]:
        """views.csv's columns after the image id: the object box, then each part's window."""
        if not self.needs_box:
            return ()
        parts = tuple(
            f"part{number}_{column}"
            for number in range(1, self.parts + 1)
            for column in BOX_COLUMNS
        )
        return tuple(f"object_{column}" for column in BOX_COLUMNS) + parts


def view_nodes(backbone: registry.Backbone, given=None) -> tuple[str, str]:
    """The two nodes whose maps find the object: given (--view-nodes), else the backbone's (for a
    keras.applications backbone without chosen ones, such as EfficientNet and ConvNeXt, the two
    deepest maps of its catalogue)."""
    nodes = tuple(given) if given else DEFAULT_VIEW_NODES.get(backbone.name)
    if nodes is None and backbone.source == registry.KERAS and len(backbone.nodes) >= 3:
        nodes = (backbone.nodes[-3], backbone.nodes[-2])
    if nodes is None:
        raise backbone_errors.BackboneError(
            f"--views needs two late nodes of {backbone.name} to find the object in: give them "
            f"with --view-nodes EARLIER,LAST (nodes: {', '.join(backbone.nodes)})"
        )
    if registry.POOL in nodes:
        raise backbone_errors.BackboneError(
            "--view-nodes must be spatial maps (pool has no positions); e.g. "
            f"{','.join(DEFAULT_VIEW_NODES['mobilenet_v2'])} for mobilenet_v2"
        )
    registry.check_nodes(backbone, nodes)
    return nodes[0], nodes[1]


def cropped_photo(image: tf.Tensor, central_crop: float) -> tf.Tensor:
    """The part of the photo the branches show: the central crop the ladder's resize applies."""
    image = tf.convert_to_tensor(image, tf.uint8)
    return tf.image.central_crop(image, central_crop) if central_crop < 1.0 else image


def mirrored(image: tf.Tensor, input_size: int, central_crop: float) -> tf.Tensor:
    """The hflip branch's CNN input, float32 [1, S, S, 3]."""
    flipped = tf.reverse(tf.convert_to_tensor(image, tf.uint8), axis=[1])
    return ladder.resize_for_backbone(flipped[None], input_size, central_crop)


def tcm_view(image: tf.Tensor, spec: ViewSpec, input_size: int, central_crop: float):
    """The tcm branch's CNN input, float32 [1, S, S, 3]: compressed at the photo's own resolution,
    like the ladder's re-encodings, then resized."""
    low, high, std = spec.tcm
    compressed = tcm_lib.compress(image, low, high, std)
    return ladder.resize_for_backbone(compressed[None], input_size, central_crop)


def photo_views(image: tf.Tensor, spec: ViewSpec, input_size: int, central_crop: float) -> list:
    """The views made from the photo alone, [1, S, S, 3] each, in order: hflip, tcm."""
    pixels = []
    if spec.hflip:
        pixels.append(mirrored(image, input_size, central_crop))
    if spec.tcm is not None:
        pixels.append(tcm_view(image, spec, input_size, central_crop))
    return pixels


def object_crop(photo: tf.Tensor, earlier_map, last_map) -> tuple[tf.Tensor, tf.Tensor]:
    """(the object's crop of the photo, uint8; its box, normalised) from the original's maps."""
    box = view_ops.object_box(last_map, earlier_map)
    return view_ops.crop_box(photo, box), box


def part_crops(object_photo: tf.Tensor, last_map, num_parts: int) -> tuple[list, tf.Tensor]:
    """([num_parts crops of the object crop, uint8], their windows [num_parts, 4], normalised to
    the object crop) from the object crop's last map."""
    windows = view_ops.part_windows(last_map, num_parts, iou_threshold=NMS_IOU)
    return [view_ops.crop_box(object_photo, windows[k]) for k in range(num_parts)], windows


def for_backbone(crop: tf.Tensor, input_size: int) -> tf.Tensor:
    """A crop resized for the CNN, float32 [1, S, S, 3] (the central crop is already applied)."""
    return ladder.resize_for_backbone(crop[None], input_size)


def in_photo(window, box):
    """A part window, normalised to the object crop, as a box normalised to the photo."""
    height, width = box[2] - box[0], box[3] - box[1]
    scale = tf.stack([height, width, height, width])
    return tf.stack([box[0], box[1], box[0], box[1]]) + tf.cast(window, tf.float32) * scale


def image_views(image, spec: ViewSpec, maps, nodes, input_size: int, central_crop: float):
    """One image's view branches, float32 [views, S, S, 3] in spec.names order, and its boxes
    [4 + 4 * parts] (object box, then part boxes, normalised to the photo; [0] without object or
    parts).

    maps(pixels [N, S, S, 3]) -> {node: [N, h, w, c]} at nodes (the earlier, then the last): the
    frozen backbone. The original branch's pixels are made again here, as the ladder makes them.
    """
    photo = cropped_photo(image, central_crop)
    pixels, boxes = [], []
    if spec.needs_box:
        original = ladder.resize_for_backbone(
            tf.convert_to_tensor(image, tf.uint8)[None], input_size, central_crop
        )
        found = maps(original)
        crop, box = object_crop(photo, found[nodes[0]][0], found[nodes[1]][0])
        object_pixels = for_backbone(crop, input_size)
        boxes.append(box)
        if spec.object:
            pixels.append(object_pixels)
        if spec.parts:
            crops, windows = part_crops(crop, maps(object_pixels)[nodes[1]][0], spec.parts)
            pixels += [for_backbone(part, input_size) for part in crops]
            boxes += [in_photo(windows[k], box) for k in range(spec.parts)]
    pixels += photo_views(image, spec, input_size, central_crop)
    stacked = tf.concat(pixels, 0) if pixels else tf.zeros([0, input_size, input_size, 3])
    return stacked, (tf.concat(boxes, 0) if boxes else tf.zeros([0]))


def box_statistics(boxes: np.ndarray) -> dict:
    """The manifest's summary of the object boxes [N, 4]: how much of the photo they keep."""
    if not len(boxes):
        return {"images": 0}
    boxes = np.asarray(boxes, np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    whole = np.all(np.isclose(boxes, [0.0, 0.0, 1.0, 1.0]), axis=1)
    return {
        "images": int(len(boxes)),
        "mean_area": float(area.mean()),
        "median_area": float(np.median(area)),
        "min_area": float(area.min()),
        "whole_image_share": float(whole.mean()),
    }
