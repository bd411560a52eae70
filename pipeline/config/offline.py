"""The offline stage's configs: which images, which backbone and nodes, which branches (codecs'
ladders, views), and how the bottlenecks are stored; and checking a records directory."""

import dataclasses

from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.config import options
from pipeline.config.options import option
from tfrecords import codec

STORAGE_DTYPES = tuple(codec.STORAGE_DTYPES)  # how values are stored; float32 (lossless) first

# Branch 0 is the original image; branch i (1..10) is its JPEG re-encoding at QUALITIES[i - 1].
QUALITIES = tuple(range(10, 101, 10))


# Backbones given as a model instead of a keras.applications name: image feature vector models, node
# pool only (bottlenecks.registry.FEATURE_VECTOR_PREFIXES, repeated so that reading flags does not
# import Keras).
FEATURE_VECTOR_PREFIXES = ("hub:", "savedmodel:")


def qualities_or_none(text: str) -> tuple[int, ...]:
    """--qualities: comma-separated integers, or none"""
    if text.strip().lower() == "none":
        return ()
    return tuple(int(part) for part in text.split(",") if part.strip())


def quality_lists(text: str) -> tuple:
    """--qualities: one list for every codec (10,30,50 or none), or a list per codec, separated by
    ';' (webp:10,30;jpeg2000:20): ((codec, qualities), ...)"""
    if ":" not in text:
        return qualities_or_none(text)
    lists = []
    for part in text.split(";"):
        if part.strip():
            name, _, values = part.partition(":")
            lists.append((name.strip(), qualities_or_none(values)))
    return tuple(lists)


def codec_list(text: str) -> tuple[str, ...]:
    """--codecs: comma-separated codec names"""
    return tuple(part.strip() for part in text.split(",") if part.strip())


VIEW_KINDS = ("object", "parts", "hflip", "tcm")


def view_list(text: str) -> tuple[str, ...]:
    """--views: comma-separated object, parts:K, hflip, tcm[:LOW:HIGH:STD]"""
    views = tuple(part.strip() for part in text.split(",") if part.strip())
    canonical = []
    for view in views:
        kind, _, count = view.partition(":")
        if kind == "tcm":
            canonical.append(_tcm_view(count))
            continue
        if kind not in VIEW_KINDS or (kind == "parts") != bool(count):
            raise ValueError(view)
        if count and not (count.isdigit() and int(count) >= 1):
            raise ValueError(view)
        canonical.append(view)
    if len({view.partition(":")[0] for view in views}) != len(views):
        raise ValueError(text)
    return tuple(canonical)


TCM_DEFAULTS = (10, 90, 8.0)  # the tcm view's low and high JPEG qualities, its block std threshold


def _tcm_view(settings: str) -> str:
    """tcm[:LOW:HIGH:STD] spelt out in full (tcm:10:90:8), so that both spellings are one job."""
    values = settings.split(":") if settings else []
    if len(values) not in (0, 3):
        raise ValueError(f"tcm:{settings}")
    low, high, std = (int(values[0]), int(values[1]), float(values[2])) if values else TCM_DEFAULTS
    if not (1 <= low <= 100 and 1 <= high <= 100 and std >= 0):
        raise ValueError(f"tcm:{settings}")
    return f"tcm:{low}:{high}:{std:g}"


RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """The offline stage: which images, which backbone and nodes, and how to store the bottlenecks.

    Example (the thesis's Inception V3 set-up on ImageNet, ~11 CNN passes per image):
      make-tfrecords --data-dir imagenet/ --out-dir records/ --backbone inception_v3 \\
          --nodes pool,mixed9,mixed8,mixed7
    An image feature vector model from TF-Hub or a SavedModel instead (node pool only, 224 px in
    [0, 1]):
      make-tfrecords --data-dir photos/ --out-dir records/ \\
          --backbone savedmodel:models/efficientnet_b0
    """

    out_dir: str = option(help="where the shards and manifest.json go")
    data_dir: str | None = option(
        None, group="source", help="root/<class>/* or root/train|val/<class>/*"
    )
    labels_csv: str | None = option(
        None, group="source", help="CSV of file,label[,split]; files relative to the CSV"
    )
    backbone: str = option(
        "inception_v3",
        help="inception_v3 | resnet50_v2 | mobilenet_v2 | efficientnet_b0..b7 | "
        "efficientnet_v2_b0..b3 | efficientnet_v2_s | convnext_tiny | convnext_small, or an image "
        "feature vector model: hub:HANDLE (TF-Hub or Kaggle Models, needs tensorflow_hub) | "
        "savedmodel:PATH (a TF2 SavedModel), node pool only",
    )
    # None: imagenet for keras.applications backbones; hub: and savedmodel: models carry their own
    # weights.
    weights: str | None = option(
        None,
        help="imagenet | PATH | none (make-tfrecords takes imagenet when it is left out; hub: and "
        "savedmodel: models carry their own)",
        show_default=False,
    )
    nodes: tuple[str, ...] | None = option(
        None, help="comma-separated node names (default: the backbone's training stages)"
    )
    codecs: tuple[str, ...] = option(
        (branches_lib.JPEG,),
        parse=codec_list,
        distinct=True,
        elements=branches_lib.CODECS,
        help="the codecs whose re-encodings of the photo make ladders, comma-separated, any of: "
        "jpeg (branches q10, ...), jpeg2000, webp, avif (branches <codec><quality>, e.g. webp30; "
        "made with Pillow, see pipeline.offline.codecs); each codec is a family",
    )
    # One list for every codec, or ((codec, qualities), ...): read it through ladders.
    qualities: tuple = option(
        QUALITIES,
        parse=quality_lists,
        help="the qualities of the re-encodings: one list for every codec, or one per codec as "
        "codec:list;codec:list (e.g. webp:10,30,50;jpeg2000:20,40; a codec not named takes "
        "10,20,...,100); none: the original alone, with --views",
    )
    views: tuple[str, ...] = option(
        (),
        parse=view_list,
        help="more branches after the ladder, any of: object (the object's crop, found from the "
        "backbone's own maps), parts:K (K part crops inside it), hflip (the mirrored photo), "
        "tcm[:LOW:HIGH:STD] (smooth 8x8 blocks, of luminance std below STD, JPEG-quantised at "
        "quality LOW, the others at HIGH; default tcm:10:90:8); see pipeline.offline.views",
        show_default=False,
    )
    view_nodes: tuple[str, ...] | None = option(
        None,
        help="with --views: the two late nodes whose maps find the object (the earlier, then the "
        "last; default: the backbone's, e.g. block_16_expand_relu,out_relu for mobilenet_v2)",
        show_default=False,
    )
    input_size: int | None = option(
        None,
        parse=options.size_or_none,
        help="CNN input size in px; 0, or left out of make-tfrecords: the backbone's own (224 for "
        "hub: and savedmodel:)",
        show_default=False,
    )
    input_range: tuple[float, float] | None = option(
        None,
        metavar="LOW,HIGH",
        help="pixel values a hub: or savedmodel: model expects (default: 0,1; e.g. -1,1)",
        show_default=False,
    )
    central_crop: float = option(
        1.0, positive=True, help="fraction of each side kept before resizing (at most 1)"
    )
    num_shards: int | None = option(
        None, minimum=1, group="shard_size", help="shards in the largest split"
    )
    shard_size_mb: float = option(
        256.0, group="shard_size", help="target shard size per node (dense upper bound)"
    )
    validation_percent: float = option(
        10.0, help="share of the training images kept for validation, by a stable hash"
    )
    test_percent: float = option(
        10.0,
        help="share of a flat root/<class>/* tree kept as the test split, by a "
        "stable hash; input with its own held-out folder (val/ or test/) or CSV split "
        "uses that",
    )
    compression: str = option("", choices=("", "GZIP"), help="shard compression")
    storage_dtype: str = option(
        codec.FLOAT32,
        choices=STORAGE_DTYPES,
        help="how activation values are stored: "
        "float32 is lossless; float16 and bfloat16 halve their bytes, rounded to 11 and 8 "
        "significant bits, and are read back as float32",
    )
    batch_size: int = option(8, minimum=1, help="images per CNN call (x number of branches)")
    seed: int = option(0, help="random weights seed with --weights none")
    progress: bool = option(True, help="no progress bar")
    runner: str = option(
        "local", choices=RUNNERS, help="local: this process; beam: Apache Beam, same output"
    )
    beam_options: str = option(
        "",
        help='Beam pipeline options with --runner beam, e.g. "--runner=DataflowRunner '
        '--project=P --region=R --temp_location=gs://B/tmp" (default: DirectRunner)',
        show_default=False,
    )

    def __post_init__(self):
        if (self.data_dir is None) == (self.labels_csv is None):
            raise errors.UserError("give exactly one of --data-dir or --labels-csv")
        if self.backbone.startswith(FEATURE_VECTOR_PREFIXES):
            if self.weights is not None:
                raise errors.UserError(
                    f"--weights does not apply to --backbone {self.backbone}: the SavedModel "
                    "carries its own weights; leave --weights out"
                )
        elif self.input_range is not None:
            raise errors.UserError(
                f"--input-range is for hub: and savedmodel: backbones; {self.backbone} brings its "
                "own preprocessing"
            )
        elif self.weights is None:
            object.__setattr__(self, "weights", "imagenet")  # frozen: the one default filled in
        options.check(self)
        if self.beam_options and self.runner != "beam":
            raise errors.UserError("--beam-options needs --runner beam")
        try:  # the views spelt out, however given (tcm and tcm:10:90:8 are one job)
            object.__setattr__(self, "views", view_list(",".join(self.views)))
        except ValueError as error:
            raise errors.UserError(
                f"--views {','.join(self.views)}: {error} is not one of object, parts:K, hflip, "
                "tcm[:LOW:HIGH:STD]"
            ) from None
        self._check_ladders()
        if self.view_nodes is not None and (len(self.view_nodes) != 2 or not self.views):
            raise errors.UserError(
                "--view-nodes takes two nodes (the earlier, then the last) and needs --views"
            )
        if self.views and self.backbone.startswith(FEATURE_VECTOR_PREFIXES):
            raise errors.UserError(
                f"--views finds the object in the backbone's own maps, and {self.backbone} gives "
                "only pooled features: use a keras.applications backbone, or leave --views out"
            )
        if (
            not 0 <= self.validation_percent < 100
            or not 0 <= self.test_percent < 100
            or self.validation_percent + self.test_percent >= 100
        ):
            raise errors.UserError(
                f"--validation-percent and --test-percent must be in [0, 100) and leave training "
                f"images, got {self.validation_percent} and {self.test_percent}"
            )
        if self.central_crop > 1:
            raise errors.UserError(f"--central-crop must be in (0, 1], got {self.central_crop}")

    def _check_ladders(self) -> None:
        named = [name for name, _ in self.qualities] if self.per_codec_qualities else []
        unknown = sorted(set(named) - set(self.codecs))
        if unknown or len(set(named)) != len(named):
            raise errors.UserError(
                f"--qualities names each codec once, and only codecs of --codecs "
                f"({','.join(self.codecs)}); got {','.join(named)}"
            )
        for name, values in self.ladders.items():
            if not all(1 <= int(value) <= 100 for value in values):
                raise errors.UserError(
                    f"--qualities must be integers in 1..100, got {name}:"
                    f"{','.join(map(str, values))}"
                )
            if len(set(values)) != len(values):
                raise errors.UserError(f"--qualities lists {name}'s qualities twice")
            if not values and name != branches_lib.JPEG:
                raise errors.UserError(
                    f"--codecs {name} has no qualities: give some in --qualities, or leave "
                    f"{name} out"
                )
        if not (any(self.ladders.values()) or self.views):
            raise errors.UserError(
                "--qualities none leaves the original alone: add --views, or give qualities"
            )

    @property
    def per_codec_qualities(self) -> bool:
        return any(isinstance(value, (tuple, list)) for value in self.qualities)

    @property
    def ladders(self) -> dict[str, tuple[int, ...]]:
        """{codec: its qualities}, in --codecs order, however --qualities was given."""
        if self.per_codec_qualities:
            given = {name: tuple(values) for name, values in self.qualities}
            return {name: given.get(name, QUALITIES) for name in self.codecs}
        return {name: tuple(self.qualities) for name in self.codecs}

    @property
    def jpeg_qualities(self) -> tuple[int, ...]:
        """The JPEG ladder's qualities (the branches q10, ...); none without jpeg in --codecs."""
        return self.ladders.get(branches_lib.JPEG, ())

    @property
    def other_codecs(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """((codec, qualities), ...) of the codecs other than JPEG, in --codecs order."""
        return tuple(
            (name, values) for name, values in self.ladders.items() if name != branches_lib.JPEG
        )


def tiny(out_dir: str, data_dir: str) -> ExtractConfig:
    """For tests: random MobileNetV2 weights on 32 px inputs, two nodes, two shards."""
    return ExtractConfig(
        out_dir=out_dir,
        data_dir=data_dir,
        backbone="mobilenet_v2",
        weights="none",
        nodes=("block_16_project_BN", "pool"),
        input_size=32,
        num_shards=2,
        batch_size=4,
        progress=False,
    )


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
    """Checking a records directory against its manifest: jpeg-ladder-verify RECORDS (or
    make-tfrecords --verify)."""

    records_dir: str = option(
        positional=True, metavar="RECORDS", help="the --out-dir of make-tfrecords"
    )
