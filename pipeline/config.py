"""Configuration as data: every tool's frozen config, each field with its flag's help, choices and
parsing.

A field made with `option(...)` is a command-line flag of the tool that reads the config
(tools.flags builds the parser from the fields; nothing is written twice). A plain field is
internal: set by code, never a flag. A config that contains a run (compare, demo) holds a
TrainConfig template (`nested`) whose fields are flags of its tool too, and derives each run from it
with dataclasses.replace.
"""

import dataclasses
import math

from pipeline import branches as branches_lib
from pipeline import errors
from tfrecords import codec

STORAGE_DTYPES = tuple(
    codec.STORAGE_DTYPES
)  # how values are stored; float32, the lossless default, first

# Branch 0 is the original image; branch i (1..10) is its JPEG re-encoding at QUALITIES[i - 1].
QUALITIES = tuple(range(10, 101, 10))


# Backbones given as a model instead of a keras.applications name: image feature vector models, node
# pool only (bottlenecks.registry.FEATURE_VECTOR_PREFIXES, repeated so that reading flags does not
# import Keras).
FEATURE_VECTOR_PREFIXES = ("hub:", "savedmodel:")


# ------------------------------------------------------------------------------------------
# Options: a field that is a flag


def option(
    default=dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices=None,
    parse=None,
    metavar: str | None = None,
    group: str | None = None,
    positional: bool = False,
    nargs: str | None = None,
    default_factory=dataclasses.MISSING,
    show_default: bool = True,
):
    """A config field that is also a flag.

    flag: its name (default --field-name; for a bool, the flag that flips the default: --name, or
    --no-name when the default is True); aliases: older names that still work; choices: the valid
    values; parse: text -> value, where the field's type alone does not say how (e.g. a number or
    "auto"); group: fields of one mutually exclusive group; positional: an argument, not a flag
    (nargs as argparse takes it).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": tuple(aliases),
        "choices": choices,
        "parse": parse,
        "metavar": metavar,
        "group": group,
        "positional": positional,
        "nargs": nargs,
        "show_default": show_default,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def nested(
    default_factory, *, exclude: tuple[str, ...] = (), include: tuple[str, ...] | None = None
):
    """A config field holding another config (a run's template) whose options are this tool's flags
    too.

    exclude: the template's fields this config sets itself for every run it derives (records,
    logdir, ...); include: only these of the template's fields are flags (the rest keep the
    template's values).
    """
    return dataclasses.field(
        default_factory=default_factory,
        metadata={"nested": True, "exclude": tuple(exclude), "include": include},
    )


def size_or_none(text: str) -> int | None:
    """--input-size: pixels, or 0 for the backbone's own."""
    return int(text) or None


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


def branch_tokens(text: str) -> tuple[str, ...]:
    """--branches: comma-separated branch names, families (ladder, parts) or indices"""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def branch_sets(text: str) -> tuple[tuple[str, ...], ...]:
    """--branch-sets: branch lists separated by ';', e.g. ladder;original,object"""
    return branches_lib.parse_sets(text)


def number_or_auto(text: str) -> float | str:
    """--learning-rate: a number, or auto."""
    return text if text == "auto" else float(text)


def check_local_output(flag: str, path: str) -> None:
    """Output folders are written with local file operations (atomic renames, fsync, shutil): no
    URLs."""
    if "://" in path:
        raise errors.UserError(
            f"{flag} {path}: write the run to a local or shared-filesystem path (a bucket can be "
            "mounted with gcsfuse or mountpoint-s3); only --records may be a URL"
        )


def _distinct(flag: str, values, allowed=None) -> None:
    if values is not None and (
        not values
        or len(set(values)) != len(values)
        or (allowed is not None and not set(values) <= set(allowed))
    ):
        known = f" of {', '.join(map(str, allowed))}" if allowed is not None else ""
        raise errors.UserError(
            f"{flag} must list distinct values{known}, got {','.join(map(str, values))}"
        )


# ------------------------------------------------------------------------------------------
# The offline stage


RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """The offline stage: which images, which backbone and nodes, and how to store the bottlenecks.

    Example (the thesis's Inception V3 set-up on ImageNet, ~11 CNN passes per image):
      make-tfrecords --data-dir imagenet/ --out-dir records/ --backbone inception_v3 \\
          --nodes pool,mixed9,mixed8,mixed7
    An image feature vector model from TF-Hub or a SavedModel instead (node pool only, 224 px in [0,
    1]):
      make-tfrecords --data-dir photos/ --out-dir records/ --backbone
      savedmodel:models/efficientnet_b0
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
        help="imagenet | PATH | none (default: imagenet; hub: and savedmodel: "
        "models carry their own)",
        show_default=False,
    )
    nodes: tuple[str, ...] | None = option(
        None, help="comma-separated node names (default: the backbone's training stages)"
    )
    codecs: tuple[str, ...] = option(
        (branches_lib.JPEG,),
        parse=codec_list,
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
        parse=size_or_none,
        help="CNN input size in px (default, or 0: the "
        "backbone's own; 224 for hub: and savedmodel:)",
        show_default=False,
    )
    input_range: tuple[float, float] | None = option(
        None,
        metavar="LOW,HIGH",
        help="pixel values a hub: or savedmodel: model expects (default: 0,1; e.g. -1,1)",
        show_default=False,
    )
    central_crop: float = option(1.0, help="fraction of each side kept before resizing")
    num_shards: int | None = option(None, group="shard_size", help="shards in the largest split")
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
    batch_size: int = option(8, help="images per CNN call (x number of branches)")
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
                    "carries "
                    f"its own weights; leave --weights out"
                )
        elif self.input_range is not None:
            raise errors.UserError(
                f"--input-range is for hub: and savedmodel: backbones; {self.backbone} brings its "
                "own "
                f"preprocessing"
            )
        elif self.weights is None:
            object.__setattr__(self, "weights", "imagenet")  # frozen: the one default filled in
        if self.runner not in RUNNERS:
            raise errors.UserError(f"--runner must be local or beam, got {self.runner!r}")
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
        if self.compression not in ("", "GZIP"):
            raise errors.UserError(f"--compression must be GZIP or empty, got {self.compression!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise errors.UserError(
                f"--storage-dtype must be one of {', '.join(STORAGE_DTYPES)}, "
                f"got {self.storage_dtype!r}"
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
        if not 0 < self.central_crop <= 1:
            raise errors.UserError(f"--central-crop must be in (0, 1], got {self.central_crop}")
        if self.batch_size < 1 or (self.num_shards is not None and self.num_shards < 1):
            raise errors.UserError("--batch-size and --num-shards must be at least 1")

    def _check_ladders(self) -> None:
        _distinct("--codecs", self.codecs, branches_lib.CODECS)
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
                    f"--codecs {name} has no qualities: give some in --qualities, or leave {name} "
                    "out"
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


# ------------------------------------------------------------------------------------------
# Training


FUSIONS = ("concat", "shared", "weighted", "gated", "family")
POOLED_HEADS = ("linear", "mlp")  # heads on a branch's pooled features
# fbsd: a multi-level head on the cached maps of several nodes (pipeline.training.fbsd)
HEADS = POOLED_HEADS + ("fbsd",)
ACTIVATIONS = ("relu", "sigmoid")
HEAD_INITS = ("random", "baseline")
LABEL_SPACES = ("auto", "dataset", "imagenet")
STRATEGIES = ("mirrored", "multiworker")  # one machine's devices | the cluster in TF_CONFIG
# How multiworker training splits the train split: every worker reads it all (data) or its own
# shards (file); auto: file when there are at least as many train shards as workers.
INPUT_SHARDINGS = ("auto", "data", "file")
OPTIMIZERS = ("sgd", "momentum", "adam")
# The thesis recipe's learning-rate sweep: candidates log-spaced around each optimizer's usual
# range.
SWEEP_RATES = {
    "sgd": (1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
    "momentum": (0.3, 0.1, 0.03, 0.01, 0.003, 0.001),
    "adam": (0.03, 0.01, 0.003, 0.001, 0.0003),
}
# The converged recipe's: a decade apart, since the rate is divided by 10 on every plateau anyway.
DECADE_RATES = {
    "sgd": (1.0, 0.1, 0.01),
    "momentum": (0.1, 0.01, 0.001),
    "adam": (0.01, 0.001, 0.0001),
}
PLATEAU_METRICS = ("top1", "loss")
SOLVERS = ("auto", "sgd")
# The converged recipe's patience, from the data's size: about PATIENCE_STEPS steps, in whole epochs
# within PATIENCE_EPOCHS. 90 validation images move top-1 by 1.1 points an image and their loss by
# chance from one epoch to the next; on a small training split an epoch is a few steps, so the rule
# waits up to 20 epochs, and on ImageNet (12,800 steps an epoch at batch 100) two.
PATIENCE_STEPS = 500
PATIENCE_EPOCHS = (2.0, 20.0)
# In a stage, the rate is divided by this on each plateau the recipe allows (the thesis's Algorithm
# 2, applied within the stage), from the stage's best checkpoint.
REDUCTION_FACTOR = 10.0
# Under the converged recipe a new best must also lower the validation loss by this much (nats per
# image): a head that separates its training images keeps shrinking its loss by ever smaller
# amounts as its weights grow, which would otherwise never count as a plateau (on imagenette-mini
# every run reached the 500-epoch cap, its loss near 0.02 and falling by 0.1 % per patience).
LOSS_MIN_DELTA = 1e-3


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training rule: what each of TrainConfig's fields left at None takes.

    thesis reproduces the thesis's schedule exactly (SGD at 0.01, a stage ends one epoch after its
    validation top-1 last rose, at most 20 epochs). converged trains every stage to convergence:
    Adam at the rate that reaches the lowest validation loss (mean over seeds) among a sweep, a
    stage ends when its validation loss stops falling for a patience that suits the data's size,
    after the rate was divided by 10 on each of two earlier plateaus, and its best checkpoint is
    restored.
    """

    name: str
    optimizer: str
    learning_rate: float | str
    plateau_metric: str  # top1 (a tie at a clearly lower loss replaces the best), or loss
    plateau_epochs: float | None  # None: from the data's size (PATIENCE_STEPS)
    max_epochs_per_stage: float
    lr_reductions: int  # plateaus inside a stage met by dividing the rate, before it ends
    sweep_epochs: float | None  # a sweep candidate's cap; None: max_epochs_per_stage
    sweep_seeds: int  # seeds each sweep candidate is trained with
    sweep_rates: dict  # optimizer -> candidates
    # Whether weighted and gated learn their branch weights after the head, from held-out branch
    # predictions (validation), rather than with it, from the branches that fit the training images.
    stacked_combiner: bool
    # Whether a linear head on pooled features is solved (pipeline.training.solved) rather than
    # trained: an L2-regularised logistic regression, exactly, its strength chosen on validation.
    solves_linear: bool


RECIPES = {
    "converged": Recipe(
        name="converged",
        optimizer="adam",
        learning_rate="auto",
        plateau_metric="loss",
        plateau_epochs=None,
        max_epochs_per_stage=500.0,
        lr_reductions=2,
        sweep_epochs=None,
        sweep_seeds=2,
        sweep_rates=DECADE_RATES,
        stacked_combiner=True,
        solves_linear=True,
    ),
    "thesis": Recipe(
        name="thesis",
        optimizer="sgd",
        learning_rate=0.01,
        plateau_metric="top1",
        plateau_epochs=1.0,
        max_epochs_per_stage=20.0,
        lr_reductions=0,
        sweep_epochs=3.0,
        sweep_seeds=1,
        sweep_rates=SWEEP_RATES,
        stacked_combiner=False,
        solves_linear=False,
    ),
}
RECIPE_NAMES = tuple(RECIPES)
# TrainConfig's fields that None leaves to the recipe.
RECIPE_FIELDS = (
    "optimizer",
    "learning_rate",
    "plateau_epochs",
    "max_epochs_per_stage",
    "lr_reductions",
    "sweep_epochs",
    "sweep_seeds",
)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the block-by-block schedule: the node it reads (it trains everything after it)
    and its rate, or none when its decision layer is solved (pipeline.training.solved)."""

    index: int
    node: str
    learning_rate: float | None
    solved: bool = False

    @property
    def name(self) -> str:
        return f"stage{self.index}_{self.node}"


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of a stage at one learning rate, as a replay (--refit, --folds) trains it again;
    a solved stage's one phase holds its L2 strength instead, at which a replay solves it again."""

    learning_rate: float
    epochs: float
    l2: float | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The block-by-block trainer: which records, which stages and branches, and the training rule.

    Example (the thesis's Inception V3 schedule: the decision layer, then mixed_10, mixed_9,
    mixed_8):
      train-block-by-block --records records/ --logdir runs/inception \\
          --stages pool,mixed9,mixed8,mixed7
    Each stage starts from the previous stage's best checkpoint with the learning rate divided by
    10; --recipe says how each stage trains (converged, the default, or the thesis's exact
    schedule).
    """

    records_dir: str = option(flag="--records", help="make_tfrecords's --out-dir")
    logdir: str = option(help="TensorBoard logs, checkpoints, results.json, export/")
    recipe: str = option(
        "converged",
        choices=RECIPE_NAMES,
        help="converged: every stage trained until its validation loss stops falling, the rate "
        "divided by 10 on the plateaus before, its best checkpoint restored, the rate swept by "
        "validation loss over seeds; thesis: the thesis's exact schedule (SGD 0.01, a stage ends "
        "one epoch after validation top-1 last rose, at most 20 epochs). Options left out take "
        "the recipe's values",
    )
    stages: tuple[str, ...] | None = option(
        None,
        help="comma-separated nodes, one stage each (default: the backbone's schedule, e.g. "
        "pool,mixed9,mixed8,mixed7 for inception_v3)",
    )
    branches: tuple[str, ...] | None = option(
        None,
        parse=branch_tokens,
        help="comma-separated branch names (original,object), families (ladder, parts) or "
        "indices (default: all); --branches original (or 0) trains the single-branch baseline",
    )
    fusion: str = option(
        "concat",
        choices=FUSIONS,
        help="how the decision layer combines the branches (concat is the thesis's); see "
        "pipeline.training.fusion",
    )
    head: str = option(
        "linear",
        choices=HEADS,
        help="the decision head; see pipeline.training.heads (fbsd: pipeline.training.fbsd)",
    )
    head_nodes: tuple[str, ...] | None = option(
        None,
        help="--head fbsd: the nodes whose cached maps it reads, comma-separated (e.g. "
        "block_13_expand_relu,block_16_expand_relu,out_relu for mobilenet_v2); the run is one "
        "stage on them",
        show_default=False,
    )
    hidden_units: int = option(
        500, help="--head mlp: hidden neurons; --head fbsd: each level's projection width"
    )
    activation: str = option("relu", choices=ACTIVATIONS, help="--head mlp")
    dropout: float = option(0.0, help="--head mlp")
    batch_size: int = option(100, help="global batch, split across replicas")
    optimizer: str | None = option(
        None,
        choices=OPTIMIZERS,
        help="sgd | momentum | adam (default: the recipe's: adam converged, sgd thesis)",
        show_default=False,
    )
    learning_rate: float | str | None = option(
        None,
        parse=number_or_auto,
        help="of the first stage, divided by the divisor at each later stage; auto: the best on "
        "validation of a sweep (default: the recipe's: auto converged, 0.01 thesis)",
        show_default=False,
    )
    sweep_learning_rates: tuple[float, ...] | None = option(
        None,
        aliases=("--learning-rates",),
        help="the --learning-rate auto sweep's candidates (default: the recipe's for the "
        "optimizer)",
    )
    sweep_epochs: float | None = option(
        None,
        help="each --learning-rate auto candidate trains at most this long (default: the "
        "recipe's: a stage's cap converged, 3 thesis)",
        show_default=False,
    )
    sweep_seeds: int | None = option(
        None,
        help="seeds each sweep candidate trains with; the choice is the mean over them (default: "
        "the recipe's: 2 converged, 1 thesis)",
        show_default=False,
    )
    sweep_dir: str | None = None  # None: LOGDIR/sweep; runs with the same rule may share one
    sweep_seed: int | None = None  # None: seed; runs that share a sweep share its seed
    learning_rate_divisor: float = option(
        10.0, help="the learning rate is divided by this at each later stage"
    )
    momentum: float | None = option(
        None, help="SGD momentum (default: 0 for sgd, 0.9 for momentum)", show_default=False
    )
    eval_every_steps: int = option(
        2000, help="evaluate and checkpoint every this many steps (at least once an epoch)"
    )
    plateau_epochs: float | None = option(
        None,
        help="a plateau is this many epochs without improvement of the recipe's validation "
        "metric (default: the recipe's: from the data's size converged, 1 thesis)",
        show_default=False,
    )
    lr_reductions: int | None = option(
        None,
        help="plateaus inside a stage met by dividing the learning rate by 10 from the stage's "
        "best checkpoint, before the next plateau ends it (default: the recipe's: 2 converged, "
        "0 thesis)",
        show_default=False,
    )
    max_epochs_per_stage: float | None = option(
        None,
        help="a stage ends after this many epochs at the latest (default: the recipe's: 500 "
        "converged, 20 thesis)",
        show_default=False,
    )
    solver: str = option(
        "auto",
        choices=SOLVERS,
        help="auto: under the converged recipe a linear head on pool is solved exactly (L2-"
        "regularised logistic regression by L-BFGS, the L2 strength chosen on validation; see "
        "pipeline.training.solved) when its features fit in --solver-memory-mb; sgd: trained like "
        "every other stage",
    )
    solver_memory_mb: float = option(
        4096.0,
        help="the solver holds the pool node's train and validation features in memory; above "
        "this many MiB the stage trains by SGD from the records instead",
    )
    folds: int = option(
        1,
        help="K > 1: choose the learning rate and each stage's stopping point by K-fold "
        "cross-validation over the train and validation images together, then train on all of "
        "them with that schedule (for a small validation split)",
    )
    refit: bool = option(
        False,
        help="after selection, also train on train + validation with the selected schedule "
        "(LOGDIR/refit, with its own export)",
    )
    head_init: str = option(
        "random",
        choices=HEAD_INITS,
        help="random, or baseline: the backbone's classifier on the original branch",
    )
    imagenet_labels: bool = option(
        False, help="integer labels are ImageNet class indices (wnid folders are recognised anyway)"
    )
    label_space: str = option(
        "auto",
        choices=LABEL_SPACES,
        help="the head's classes: the backbone's 1000 ImageNet classes (imagenet), the dataset's "
        "own (dataset), or auto: ImageNet's when the class folders are wnids",
    )
    train_batchnorm: bool = option(
        False, help="update BatchNorm statistics in unfrozen blocks (default: inference mode)"
    )
    devices: tuple[str, ...] | None = option(
        None, help="comma-separated devices for MirroredStrategy (default: all GPUs, else the CPU)"
    )
    strategy: str = option(
        "mirrored",
        choices=STRATEGIES,
        help="mirrored: this machine's devices; multiworker: one process per machine of the "
        "cluster in TF_CONFIG, each run with the same flags",
    )
    collective_timeout: float = option(
        600.0, help="multiworker: seconds a worker waits for the others before the run stops"
    )
    input_sharding: str = option(
        "auto",
        choices=INPUT_SHARDINGS,
        help="multiworker: data: every worker reads every record and keeps its part of each batch "
        "(the single-machine run); file: each worker reads only its own train shards; auto: file "
        "when there are at least as many train shards as workers",
    )
    shuffle_buffer: int = option(10000, help="examples in the training shuffle buffer, at most ...")
    shuffle_buffer_mb: float = option(
        1024.0, help="... and at most this many MiB of them (records of deep nodes are large)"
    )
    cache_mb: float = option(
        2048.0,
        help="keep a split's decoded bottlenecks in memory when they fit in this many MiB (0 "
        "decodes every epoch)",
    )
    seed: int = option(0, help="initialisation and shuffling (the first of --seeds)")
    seeds: int = option(
        1,
        help="independent runs (LOGDIR/seed<k>) with seeds seed, seed + 1, ..., reported as "
        "mean ± sd",
    )
    export: bool = option(
        True, help="write no raw-image model into LOGDIR/export (sweeps, seeds, tests)"
    )
    progress: bool = option(True, help="no progress bar")
    # Set by the trainer for the runs it derives: (K, i) trains on the train and validation images
    # outside fold i of K and chooses on fold i; a replay trains on the train and validation images
    # with a fixed schedule (per stage, its phases) and chooses nothing.
    fold: tuple[int, int] | None = None
    replay: tuple[tuple[Phase, ...], ...] | None = None
    # A replay's weighted or gated combiner comes from this run's best checkpoints (a replay has no
    # held-out images to learn one from).
    combiner_source: str | None = None
    # False for the runs a selection tries and throws away (sweep candidates, folds): no TensorBoard
    # runs of their own, only the selection's summary.
    summaries: bool = True

    def __post_init__(self):
        check_local_output("--logdir", self.logdir)
        _choice("--recipe", self.recipe, RECIPE_NAMES)
        if self.optimizer is not None:
            _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--fusion", self.fusion, FUSIONS)
        _choice("--head", self.head, HEADS)
        _choice("--label-space", self.label_space, LABEL_SPACES)
        _choice("--head-init", self.head_init, HEAD_INITS)
        _choice("--strategy", self.strategy, STRATEGIES)
        _choice("--input-sharding", self.input_sharding, INPUT_SHARDINGS)
        _choice("--solver", self.solver, SOLVERS)
        if isinstance(self.learning_rate, str) and self.learning_rate != "auto":
            raise errors.UserError(
                f"--learning-rate must be a number or auto, got {self.learning_rate!r}"
            )
        positive = {
            "--learning-rate": None if isinstance(self.learning_rate, str) else self.learning_rate,
            "--learning-rate-divisor": self.learning_rate_divisor,
            "--sweep-epochs": self.sweep_epochs,
            "--plateau-epochs": self.plateau_epochs,
            "--max-epochs-per-stage": self.max_epochs_per_stage,
            "--collective-timeout": self.collective_timeout,
            "--shuffle-buffer-mb": self.shuffle_buffer_mb,
            "--solver-memory-mb": self.solver_memory_mb,
        }
        for flag, value in positive.items():
            if value is not None and value <= 0:
                raise errors.UserError(f"{flag} must be positive, got {value}")
        at_least_one = {
            "--seeds": self.seeds,
            "--batch-size": self.batch_size,
            "--folds": self.folds,
            "--eval-every-steps": self.eval_every_steps,
            "--shuffle-buffer": self.shuffle_buffer,
            "--sweep-seeds": self.sweep_seeds,
        }
        for flag, value in at_least_one.items():
            if value is not None and value < 1:
                raise errors.UserError(f"{flag} must be at least 1, got {value}")
        if self.lr_reductions is not None and self.lr_reductions < 0:
            raise errors.UserError(f"--lr-reductions must be at least 0, got {self.lr_reductions}")
        if self.branches is not None and (
            not self.branches or len(set(self.branches)) != len(self.branches)
        ):
            raise errors.UserError(
                f"--branches must list distinct branches, got {','.join(map(str, self.branches))}"
            )
        if self.strategy == "multiworker" and self.devices:
            raise errors.UserError(
                "--devices is for --strategy mirrored: each worker of --strategy multiworker uses "
                "all its GPUs, else its CPU; drop --devices"
            )
        if self.strategy != "multiworker" and self.input_sharding != "auto":
            raise errors.UserError(
                "--input-sharding is for --strategy multiworker: on one machine every replica's "
                "batch comes from one stream; drop --input-sharding"
            )
        if self.folds > 1 and self.refit:
            raise errors.UserError(
                "--folds already trains the final model on train + validation: drop --refit"
            )
        self._check_fbsd()

    def _check_fbsd(self) -> None:
        if self.head != "fbsd":
            if self.head_nodes:
                raise errors.UserError(
                    "--head-nodes is for --head fbsd: drop it or add --head fbsd"
                )
            return
        if not self.head_nodes or len(set(self.head_nodes)) != len(self.head_nodes):
            raise errors.UserError(
                "--head fbsd reads the maps of several nodes: give them as --head-nodes N1,N2,N3 "
                "(distinct nodes the records hold)"
            )
        if self.head_init == "baseline":
            raise errors.UserError(
                "--head-init baseline starts a linear decision layer: --head fbsd starts at random"
            )
        if self.hidden_units < 1:
            raise errors.UserError(f"--hidden-units must be at least 1, got {self.hidden_units}")

    @property
    def rule(self) -> Recipe:
        return RECIPES[self.recipe]

    def resolved(self) -> "TrainConfig":
        """The config with every field left at None filled in from its recipe (once, at the start
        of a run; the run's identity is the config as given)."""
        filled = {
            name: getattr(self.rule, name) for name in RECIPE_FIELDS if getattr(self, name) is None
        }
        return dataclasses.replace(self, **filled) if filled else self

    @property
    def schedule(self) -> tuple[Stage, ...]:
        """The stages, in order: each reads its node, at the first stage's rate divided by the
        divisor per stage.

        Defined once the config is resolved: its recipe applied, its stages named (not the
        backbone's default) and its learning rate a number (not auto); see
        pipeline.training.prepare.
        """
        if self.stages is None or not isinstance(self.learning_rate, (int, float)):
            raise ValueError("the schedule needs resolved stages and learning rate")
        return tuple(
            Stage(index, node, self.learning_rate / self.learning_rate_divisor**index)
            for index, node in enumerate(self.stages)
        )

    def patience_epochs(self, steps_per_epoch: int) -> float:
        """Epochs without improvement that make a plateau: the config's, or the data size's."""
        if self.plateau_epochs is not None:
            return self.plateau_epochs
        low, high = PATIENCE_EPOCHS
        return float(min(high, max(low, math.ceil(PATIENCE_STEPS / steps_per_epoch))))

    @property
    def momentum_value(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 0.9 if self.optimizer == "momentum" else 0.0

    @property
    def sweep_rates(self) -> tuple[float, ...]:
        return tuple(self.sweep_learning_rates or self.rule.sweep_rates[self.optimizer])


def _choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise errors.UserError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def tiny_training(records_dir: str, logdir: str) -> TrainConfig:
    """For tests: small batches, frequent evaluation, short stages, the thesis's rule."""
    return TrainConfig(
        records_dir=records_dir,
        logdir=logdir,
        recipe="thesis",
        batch_size=4,
        eval_every_steps=2,
        max_epochs_per_stage=1.0,
        shuffle_buffer=64,
        progress=False,
    )


# ------------------------------------------------------------------------------------------
# The comparison protocol


def compare_training() -> TrainConfig:
    """The one training rule of every arm: the decision layer alone, three seeds, the default recipe
    (converged: each arm's linear layer solved exactly, its L2 strength chosen on validation; one
    run stands for the seeds of an arm that nothing else seeds)."""
    return TrainConfig(records_dir="", logdir="", stages=("pool",), seeds=3, export=True)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The comparison protocol: the single-branch baseline and each fusion, trained by one rule,
    scored on test.

    Example (does the ladder help on my data? 5 arms, each linear layer solved at its own L2
    strength; weighted and gated stack their branch weights on it, 3 seeds each; minutes on 2 cores
    for a thousand images):
      jpeg-ladder-compare --records records/ --out-dir compare/ \\
          --fusions concat,shared,weighted,gated --seeds 3
    Every arm is `training` with its branches and fusion; --seed is the first seed, --seeds their
    number.
    """

    records_dir: str = option(
        flag="--records", help="make_tfrecords's --out-dir (with a test split)"
    )
    out_dir: str = option(
        help="comparison.json, comparison.md, the plot and every run under runs/<arm>/seed<k>"
    )
    fusions: tuple[str, ...] = option(
        FUSIONS[:4], help="fusions to compare with the baseline (family too with --branch-sets)"
    )
    branch_sets: tuple[tuple[str, ...], ...] | None = option(
        None,
        parse=branch_sets,
        metavar='"SET;SET"',
        help='train every fusion on every branch set, e.g. "ladder;original,object;ladder,object"; '
        'arms are keyed "<fusion>[<set>]", the baseline stays the original alone (default: every '
        "branch, one set)",
        show_default=False,
    )
    training: TrainConfig = nested(
        compare_training,
        exclude=("records_dir", "logdir", "branches", "fusion", "export"),
    )
    cost_images: int = option(
        32,
        help="test images timed through each arm's export (serving_default at batch 1 and 32) "
        "for its serving cost beside its accuracy: backbone passes and ms per image; 0 leaves "
        "it out",
    )

    def __post_init__(self):
        check_local_output("--out-dir", self.out_dir)
        _distinct("--fusions", self.fusions, FUSIONS)
        if self.cost_images < 0:
            raise errors.UserError(f"--cost-images must be 0 or more, got {self.cost_images}")


# ------------------------------------------------------------------------------------------
# Hidden-layer heads: pruning and compression


PRUNE_METHODS = ("threshold", "most-similar", "similar-complementary", "batch")


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Pruning an MLP head's hidden neurons by distinctiveness: prune, fine-tune, repeat.

    Example (the most-similar pair per cycle on a run trained with an MLP head on `pool`; minutes on
    a CPU for a 1280-500-10 head):
      jpeg-ladder-prune --logdir runs/mlp --method most-similar --out-dir prune/most-similar
    Expected: validation top-1 stays within --tolerance of the unpruned head for most of the
    neurons.
    """

    out_dir: str = option(
        help="pruning.json, pruning.md, pruning.png, TensorBoard scalars, the inflection head"
    )
    logdir: str | None = option(
        None, group="source", help="a training run with an MLP head whose first stage reads pool"
    )
    records_dir: str | None = option(
        None,
        flag="--records",
        group="source",
        help="instead: train the starting MLP head here on these records' pool",
    )
    method: str = option(
        "most-similar", choices=PRUNE_METHODS, help="how neurons are chosen each cycle"
    )
    similar_degrees: float = option(
        15.0, help="threshold: a pair closer than this is similar (one removed, merged)"
    )
    complementary_degrees: float = option(
        165.0, help="threshold: a pair wider than this is complementary"
    )
    complementary: str = option(
        "both", choices=("both", "one"), help="neurons removed from a complementary pair"
    )
    merge: str = option(
        "scaled",
        choices=("add", "scaled"),
        help="add: the papers' rule; scaled: least-squares scale and offset (exact at 0 degrees)",
    )
    steps_per_cycle: int = option(1, help="selections between two fine-tunings (1 as the papers)")
    max_cycles: int | None = option(None, help="at most this many cycles")
    min_neurons: int = option(1, help="never fewer hidden neurons than this")
    tolerance: float = option(
        0.01, help="validation top-1 drop (fraction) that marks the inflection"
    )
    inflection_patience: int = option(
        1, help="cycles in a row below the tolerance that make the inflection"
    )
    stop_at_inflection: bool = option(
        True, flag="--past-inflection", help="keep pruning after the inflection"
    )
    # Fine-tuning (and training a starting head with --records): heads.fit under the recipe, batch
    # 1024, patience 20, <= 500 epochs (the papers' figures).
    recipe: str = option(
        "converged",
        choices=RECIPE_NAMES,
        help="fine-tuning and the inflection: converged: Adam until validation loss stops "
        "falling, the inflection measured against the best validation top-1 reached so far; "
        "thesis: the papers' SGD until validation top-1 stops rising, the inflection measured "
        "against the unpruned head",
    )
    learning_rate: float | None = option(
        None,
        help="fine-tuning learning rate (default: the recipe's: Adam 0.001 converged, SGD 0.01 "
        "thesis)",
        show_default=False,
    )
    momentum: float = option(0.5, help="fine-tuning SGD momentum (--recipe thesis)")
    batch_size: int = option(1024, help="fine-tuning batch")
    max_epochs: int = option(500, help="fine-tuning epochs at most")
    patience: int = option(20, help="fine-tuning early-stopping patience (epochs)")
    branches: tuple[str, ...] | None = option(
        ("0",),
        parse=branch_tokens,
        help="with --records: comma-separated branches (names, families or indices), concatenated",
    )
    hidden_units: int = option(500, help="with --records")
    activation: str = option("relu", choices=ACTIVATIONS, help="with --records")
    dropout: float = option(0.2, help="with --records")
    seed: int = option(0, help="initialisation and shuffling")
    progress: bool = option(True, help="no progress lines")

    def __post_init__(self):
        if (self.logdir is None) == (self.records_dir is None):
            raise errors.UserError(
                "give exactly one of --logdir (a run with an MLP head) or --records"
            )
        if self.method not in PRUNE_METHODS:
            raise errors.UserError(
                f"--method must be one of {', '.join(PRUNE_METHODS)}, got {self.method!r}"
            )
        if self.complementary not in ("both", "one"):
            raise errors.UserError(
                f"--complementary must be both or one, got {self.complementary!r}"
            )
        if self.merge not in ("add", "scaled"):
            raise errors.UserError(f"--merge must be add or scaled, got {self.merge!r}")
        if not 0 <= self.similar_degrees < self.complementary_degrees <= 180:
            raise errors.UserError("need 0 <= --similar-degrees < --complementary-degrees <= 180")
        if (
            min(
                self.steps_per_cycle,
                self.min_neurons,
                self.batch_size,
                self.max_epochs,
                self.inflection_patience,
            )
            < 1
            or self.patience < 0
        ):
            raise errors.UserError(
                "--steps-per-cycle, --min-neurons, --batch-size, --max-epochs and "
                "--inflection-patience "
                "must be at least 1, --patience at least 0"
            )
        if self.tolerance < 0:
            raise errors.UserError(f"--tolerance must be at least 0, got {self.tolerance}")
        _choice("--recipe", self.recipe, RECIPE_NAMES)
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise errors.UserError(f"--learning-rate must be positive, got {self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """An autoencoder on cached pooled features whose code layer is pruned by distinctiveness.

    Example (MobileNetV2 pool features of the original branch, 256 sigmoid code units to start):
      jpeg-ladder-compress --records records/ --out-dir compress/ --branches 0 --code-size 256
    Writes accuracy (top-1/5/10) of a classifier on the codes against the code size.
    """

    records_dir: str = option(flag="--records", help="make_tfrecords's --out-dir")
    out_dir: str = option(help="compression.json, compression.md, compression.png (and records/)")
    node: str = option("pool", help="the node whose features are compressed")
    branches: tuple[str, ...] = option(
        ("0",),
        parse=branch_tokens,
        help="comma-separated branches (names, families or indices), concatenated",
    )
    code_size: int = option(256, help="the autoencoder's starting code size")
    epochs: int = option(200, help="training before pruning")
    learning_rate: float = option(0.001, help="Adam")
    batch_size: int = option(64, help="autoencoder and classifier batch")
    loss_threshold: float = option(
        0.001, help="prune while the validation reconstruction MSE stays under this"
    )
    prune_every_epochs: int | None = option(
        None, help="instead of the threshold: remove one code unit every N epochs"
    )
    fine_tune_epochs: int = option(5, help="after each removal, under the threshold rule")
    min_code_size: int = option(2, help="never fewer code units than this")
    report_sizes: tuple[int, ...] = option(
        (), help="comma-separated code sizes at which to train a classifier too"
    )
    head: str = option("linear", choices=POOLED_HEADS, help="the classifier on the codes")
    recipe: str = option(
        "converged",
        choices=RECIPE_NAMES,
        help="how the classifier on the codes trains: converged: Adam until validation loss stops "
        "falling; thesis: SGD 0.01 (momentum 0.9) until validation top-1 stops rising",
    )
    hidden_units: int = option(500, help="--head mlp")
    classifier_epochs: int = option(500, help="the classifier's epochs at most")
    patience: int = option(20, help="the classifier's early-stopping patience (epochs)")
    write_records: bool = option(
        False, help="write the final codes as records (node pool) under OUT/records"
    )
    seed: int = option(0, help="initialisation and shuffling")
    progress: bool = option(True, help="no progress lines")

    def __post_init__(self):
        _distinct("--branches", self.branches)
        if self.code_size < 1 or not 1 <= self.min_code_size <= self.code_size:
            raise errors.UserError("need 1 <= --min-code-size <= --code-size")
        if min(self.epochs, self.batch_size, self.fine_tune_epochs, self.classifier_epochs) < 1:
            raise errors.UserError(
                "--epochs, --batch-size, --fine-tune-epochs and --classifier-epochs must be at "
                "least 1"
            )
        if self.prune_every_epochs is not None and self.prune_every_epochs < 1:
            raise errors.UserError(
                f"--prune-every-epochs must be at least 1, got {self.prune_every_epochs}"
            )
        if self.loss_threshold <= 0 or self.learning_rate <= 0:
            raise errors.UserError("--loss-threshold and --learning-rate must be positive")
        _choice("--recipe", self.recipe, RECIPE_NAMES)


# ------------------------------------------------------------------------------------------
# Evaluation, prediction, reports


EVALUATION_SPLITS = ("test", "validation", "train", "all")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Scoring a trained topology against its baseline, every branch alone, the oracle and the
    ensemble.

    jpeg-ladder-evaluate --model LOGDIR/export --records RECORDS --out-dir OUT
    """

    model: str = option(help="LOGDIR/export of the trained topology")
    out_dir: str = option(help="evaluation.json and evaluation.md")
    records_dir: str | None = option(
        None,
        flag="--records",
        group="source",
        help="make_tfrecords's --out-dir (evaluates its test split by default)",
    )
    data_dir: str | None = option(
        None, group="source", help="raw images, root/<class>/* or root/train|val/<class>/*"
    )
    labels_csv: str | None = option(
        None, group="source", help="raw images listed as file,label[,split]"
    )
    split: str = option(
        "test",
        choices=EVALUATION_SPLITS,
        help="which images of the source to evaluate (records "
        "without a test split fall back to validation, and the output says so)",
    )
    baseline: str | None = option(
        None,
        help="LOGDIR of a single-branch training (--branches 0), needed when the "
        "classes are not ImageNet's or the backbone is a hub: or savedmodel: model",
    )
    image_ids: tuple[str, ...] = option((), help="comma-separated image ids for per-image tables")
    boxes_csv: str | None = option(
        None,
        help="with --records made with --views object: ground-truth boxes (CUB's image,x,y,w,h in "
        "pixels) to score the object boxes against (share with IoU >= 0.5)",
    )
    cost_images: int = option(
        64,
        help="images of the evaluated split timed through the export's serving_default at batch "
        "1 and 32 for the cost entry (backbone passes and ms per image); 0 leaves it out",
    )

    def __post_init__(self):
        if self.cost_images < 0:
            raise errors.UserError(f"--cost-images must be 0 or more, got {self.cost_images}")
        if (
            sum(source is not None for source in (self.records_dir, self.data_dir, self.labels_csv))
            != 1
        ):
            raise errors.UserError("give exactly one of --records, --data-dir or --labels-csv")
        if self.boxes_csv is not None and self.records_dir is None:
            raise errors.UserError(
                "--boxes-csv scores the object boxes the records hold: give --records"
            )
        if self.split not in EVALUATION_SPLITS:
            raise errors.UserError(
                f"--split must be one of {', '.join(EVALUATION_SPLITS)}, got {self.split!r}"
            )


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Classifying image files with an exported model: jpeg-ladder-predict --model LOGDIR/export
    IMAGE..."""

    model: str = option(help="LOGDIR/export of a finished training")
    images: tuple[str, ...] = option(
        positional=True,
        nargs="+",
        help="image files (any format Pillow reads), or folders: every file directly in them",
    )
    top: int = option(5, help="classes to print per image")
    batch_size: int = option(
        32, help="images sent through the export's serving_default in one request"
    )
    csv: str | None = option(
        None,
        help="write image,label,confidence (the top class and its probability) per image to this "
        "CSV instead of printing the top classes",
    )

    def __post_init__(self):
        if self.top < 1:
            raise errors.UserError(f"--top must be at least 1, got {self.top}")
        if self.batch_size < 1:
            raise errors.UserError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The Markdown report with its plots: jpeg-ladder-report --logdir LOGDIR --evaluation OUT
    --out-dir REPORT."""

    logdir: str = option(help="the training run (its results.json)")
    out_dir: str = option(help="report.md, its plots and report.json")
    evaluation: str | None = option(None, help="evaluate's --out-dir (its evaluation.json)")
    data_dir: str | None = option(
        None,
        help="images for the quality histogram (default: the records' source)",
        show_default=False,
    )
    bench: tuple[str, ...] = option((), nargs="*", help="benchmark JSON files to include")


@dataclasses.dataclass(frozen=True)
class HistogramConfig:
    """The JPEG quality-factor histogram of a folder: jpeg-ladder-qf-histogram DIR [--plot PNG]
    [--json FILE]."""

    directory: str = option(positional=True, help="the folder whose files are counted")
    plot: str | None = option(None, help="write the histogram as a PNG here")
    json: str | None = option(None, help="write the counts as JSON here")


# ------------------------------------------------------------------------------------------
# The demo


def demo_training() -> TrainConfig:
    """The demo's one training rule for every arm: the default recipe, shortened to fit a few
    minutes on 2 cores (a short sweep of two rates, five epochs of patience, one reduction of the
    rate, two seeds)."""
    return TrainConfig(
        records_dir="",
        logdir="",
        batch_size=16,
        eval_every_steps=5,
        sweep_learning_rates=(0.01, 0.001),
        sweep_seeds=1,
        plateau_epochs=5.0,
        lr_reductions=1,
        max_epochs_per_stage=40.0,
        seeds=2,
        export=True,
    )


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Defaults run anywhere, offline, in about three minutes on 2 cores: synthetic images, random
    weights.

    The synthetic classes differ in colour and texture as well as shape, which random ResNet-50 V2
    features keep (random MobileNetV2 ones vanish); with --data-dir and --weights it runs the same
    on real data.
    """

    out_dir: str = option("demo", help="where everything goes")
    data_dir: str | None = option(
        None,
        help="a real dataset (root/<class>/* or root/train|val/<class>/*) instead "
        "of the synthetic one",
    )
    backbone: str = option("resnet50_v2", help="as make-tfrecords --backbone")
    weights: str | None = option("none", help="imagenet | PATH | none")
    input_size: int | None = option(
        64, parse=size_or_none, help="CNN input size (0 = the backbone's own)"
    )
    images_per_class: int = option(60, help="synthetic images per class")
    validation_percent: float = 20.0
    test_percent: float = (
        30.0  # a flat synthetic tree has no held-out folder: the verdict needs test images
    )
    num_stages: int = option(
        1, help="stages of the backbone's schedule every arm trains (1: the decision layer)"
    )
    # The comparison: the baseline, the thesis's concat and the shared head (jpeg-ladder-compare
    # runs every fusion), every arm by demo_training's rule.
    fusions: tuple[str, ...] = option(("concat", "shared"), help="fusions compared")
    training: TrainConfig = nested(
        demo_training,
        include=(
            "recipe",
            "max_epochs_per_stage",
            "learning_rate",
            "plateau_epochs",
            "head_init",
            "seeds",
            "progress",
        ),
    )
