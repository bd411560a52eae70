"""Configuration as data: every tool's frozen config, each field with its flag's help, choices and
parsing.

A field made with `option(...)` is a command-line flag of the tool that reads the config
(tools.flags builds the parser from the fields; nothing is written twice). A plain field is
internal: set by code, never a flag. A config that contains a run (compare, demo) holds a
TrainConfig template (`nested`) whose fields are flags of its tool too, and derives each run from it
with dataclasses.replace.
"""

import dataclasses

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


def branch_names(qualities=QUALITIES) -> tuple[str, ...]:
    return ("original",) + tuple(f"q{quality}" for quality in qualities)


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
        help="inception_v3 | resnet50_v2 | mobilenet_v2, or an image feature "
        "vector model: hub:HANDLE (TF-Hub or Kaggle Models, needs tensorflow_hub) | "
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
    qualities: tuple[int, ...] = option(QUALITIES, help="JPEG qualities of branches 1..")
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
        bad = [quality for quality in self.qualities if not 1 <= int(quality) <= 100]
        if bad or not self.qualities:
            raise errors.UserError(f"--qualities must be integers in 1..100, got {self.qualities}")
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


FUSIONS = ("concat", "shared", "weighted", "gated")
HEADS = ("linear", "mlp")
ACTIVATIONS = ("relu", "sigmoid")
HEAD_INITS = ("random", "baseline")
LABEL_SPACES = ("auto", "dataset", "imagenet")
STRATEGIES = ("mirrored", "multiworker")  # one machine's devices | the cluster in TF_CONFIG
# How multiworker training splits the train split: every worker reads it all (data) or its own
# shards (file); auto: file when there are at least as many train shards as workers.
INPUT_SHARDINGS = ("auto", "data", "file")
# The learning-rate sweep's candidates, log-spaced around each optimizer's usual range.
SWEEP_RATES = {
    "sgd": (1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
    "momentum": (0.3, 0.1, 0.03, 0.01, 0.003, 0.001),
    "adam": (0.03, 0.01, 0.003, 0.001, 0.0003),
}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the block-by-block schedule: the node it reads (it trains everything after it)
    and its rate."""

    index: int
    node: str
    learning_rate: float

    @property
    def name(self) -> str:
        return f"stage{self.index}_{self.node}"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The block-by-block trainer: which records, which stages and branches, and the thesis's
    schedule.

    Example (the thesis's Inception V3 schedule: the decision layer, then mixed_10, mixed_9,
    mixed_8):
      train-block-by-block --records records/ --logdir runs/inception --stages
      pool,mixed9,mixed8,mixed7
    Each stage starts from the previous stage's best checkpoint with the learning rate divided by
    10.
    """

    records_dir: str = option(flag="--records", help="make_tfrecords's --out-dir")
    logdir: str = option(help="TensorBoard logs, checkpoints, results.json, export/")
    stages: tuple[str, ...] | None = option(
        None,
        help="comma-separated nodes, one stage each (default: the "
        "backbone's schedule, e.g. pool,mixed9,mixed8,mixed7 for inception_v3)",
    )
    branches: tuple[int, ...] | None = option(
        None,
        help="comma-separated branch indices, 0 = original (default: "
        "all); --branches 0 trains the single-branch baseline",
    )
    fusion: str = option(
        "concat",
        choices=FUSIONS,
        help="how the decision layer combines the branches (concat "
        "is the thesis's); see pipeline.training.fusion",
    )
    head: str = option(
        "linear", choices=HEADS, help="the decision head; see pipeline.training.heads"
    )
    hidden_units: int = option(500, help="--head mlp")
    activation: str = option("relu", choices=ACTIVATIONS, help="--head mlp")
    dropout: float = option(0.0, help="--head mlp")
    batch_size: int = option(100, help="global batch, split across replicas")
    optimizer: str = option(
        "sgd", choices=tuple(SWEEP_RATES), help="sgd (the thesis) | momentum | adam"
    )
    learning_rate: float | str = option(
        0.01,
        parse=number_or_auto,
        help="of the first stage, divided by the "
        "divisor at each later stage; auto: the best on validation of a short sweep",
    )
    sweep_learning_rates: tuple[float, ...] | None = option(
        None,
        aliases=("--learning-rates",),
        help="the --learning-rate auto sweep's candidates (default: the optimizer's)",
    )
    sweep_epochs: float = option(
        3.0, help="length of each --learning-rate auto candidate (with the plateau rule)"
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
    plateau_epochs: float = option(
        1.0,
        help="a stage ends when validation top-1 has not improved for this many "
        "epochs (a tie at a lower loss replaces the best checkpoint without extending "
        "the stage)",
    )
    max_epochs_per_stage: float = option(
        20.0, help="a stage ends after this many epochs at the latest"
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
        help="the head's classes: the backbone's 1000 ImageNet "
        "classes (imagenet), the dataset's own (dataset), or auto: ImageNet's when the class "
        "folders are wnids",
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
        help="mirrored: this machine's devices; multiworker: "
        "one process per machine of the cluster in TF_CONFIG, each run with the same flags",
    )
    collective_timeout: float = option(
        600.0, help="multiworker: seconds a worker waits for the others before the run stops"
    )
    input_sharding: str = option(
        "auto",
        choices=INPUT_SHARDINGS,
        help="multiworker: data: every worker reads "
        "every record and keeps its part of each batch (the single-machine run); file: "
        "each worker reads only its own train shards; auto: file when there are at least "
        "as many train shards as workers",
    )
    shuffle_buffer: int = option(10000, help="examples in the training shuffle buffer, at most ...")
    shuffle_buffer_mb: float = option(
        1024.0, help="... and at most this many MiB of them (records of deep nodes are large)"
    )
    cache_mb: float = option(
        2048.0,
        help="keep a split's decoded bottlenecks in memory when they fit in this many "
        "MiB (0 decodes every epoch)",
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

    def __post_init__(self):
        check_local_output("--logdir", self.logdir)
        if self.optimizer not in SWEEP_RATES:
            raise errors.UserError(
                f"--optimizer must be one of {', '.join(SWEEP_RATES)}, got {self.optimizer!r}"
            )
        if self.fusion not in FUSIONS or self.head not in HEADS:
            raise errors.UserError(
                f"--fusion must be one of {', '.join(FUSIONS)} and --head one of "
                f"{', '.join(HEADS)}, "
                f"got {self.fusion!r} and {self.head!r}"
            )
        if isinstance(self.learning_rate, str) and self.learning_rate != "auto":
            raise errors.UserError(
                f"--learning-rate must be a number or auto, got {self.learning_rate!r}"
            )
        if self.seeds < 1 or self.sweep_epochs <= 0:
            raise errors.UserError("--seeds must be at least 1 and --sweep-epochs positive")
        if self.label_space not in LABEL_SPACES:
            raise errors.UserError(
                f"--label-space must be one of {', '.join(LABEL_SPACES)}, got {self.label_space!r}"
            )
        if self.head_init not in HEAD_INITS:
            raise errors.UserError(
                f"--head-init must be random or baseline, got {self.head_init!r}"
            )
        if self.batch_size < 1 or self.eval_every_steps < 1:
            raise errors.UserError("--batch-size and --eval-every-steps must be at least 1")
        if (
            not isinstance(self.learning_rate, str) and self.learning_rate <= 0
        ) or self.learning_rate_divisor <= 0:
            raise errors.UserError("--learning-rate and its divisor must be positive")
        if self.max_epochs_per_stage <= 0 or self.plateau_epochs <= 0:
            raise errors.UserError("--max-epochs-per-stage and --plateau-epochs must be positive")
        if self.branches is not None and (
            not self.branches or len(set(self.branches)) != len(self.branches)
        ):
            raise errors.UserError(
                f"--branches must list distinct branch indices, got {self.branches}"
            )
        if self.strategy not in STRATEGIES:
            raise errors.UserError(
                f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.strategy == "multiworker" and self.devices:
            raise errors.UserError(
                "--devices is for --strategy mirrored: each worker of --strategy multiworker uses "
                "all "
                "its GPUs, else its CPU; drop --devices"
            )
        if self.shuffle_buffer < 1 or self.shuffle_buffer_mb <= 0:
            raise errors.UserError(
                f"--shuffle-buffer must be at least 1 and --shuffle-buffer-mb positive, got "
                f"{self.shuffle_buffer} and {self.shuffle_buffer_mb}"
            )
        if self.input_sharding not in INPUT_SHARDINGS:
            raise errors.UserError(
                f"--input-sharding must be one of {', '.join(INPUT_SHARDINGS)}, "
                f"got {self.input_sharding!r}"
            )
        if self.strategy != "multiworker" and self.input_sharding != "auto":
            raise errors.UserError(
                "--input-sharding is for --strategy multiworker: on one machine every replica's "
                "batch "
                "comes from one stream; drop --input-sharding"
            )
        if self.collective_timeout <= 0:
            raise errors.UserError(
                f"--collective-timeout must be positive, got {self.collective_timeout}"
            )

    @property
    def schedule(self) -> tuple[Stage, ...]:
        """The stages, in order: each reads its node, at the first stage's rate divided by the
        divisor per stage.

        Defined once the config is resolved: its stages named (not the backbone's default) and its
        learning rate a number (not auto); see pipeline.training.prepare.resolve.
        """
        if self.stages is None or isinstance(self.learning_rate, str):
            raise ValueError(
                "the schedule needs resolved stages and learning rate (see prepare.resolve)"
            )
        return tuple(
            Stage(index, node, self.learning_rate / self.learning_rate_divisor**index)
            for index, node in enumerate(self.stages)
        )

    @property
    def momentum_value(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 0.9 if self.optimizer == "momentum" else 0.0

    @property
    def sweep_rates(self) -> tuple[float, ...]:
        return tuple(self.sweep_learning_rates or SWEEP_RATES[self.optimizer])


def tiny_training(records_dir: str, logdir: str) -> TrainConfig:
    """For tests: small batches, frequent evaluation, short stages."""
    return TrainConfig(
        records_dir=records_dir,
        logdir=logdir,
        batch_size=4,
        eval_every_steps=2,
        max_epochs_per_stage=1.0,
        shuffle_buffer=64,
        progress=False,
    )


# ------------------------------------------------------------------------------------------
# The comparison protocol


def compare_training() -> TrainConfig:
    """The one training rule of every arm: the decision layer alone, Adam with a learning-rate
    sweep, and a plateau long enough for every arm to converge (sgd, the thesis's optimizer, stops
    some arms early)."""
    return TrainConfig(
        records_dir="",
        logdir="",
        stages=("pool",),
        optimizer="adam",
        learning_rate="auto",
        sweep_epochs=5.0,
        plateau_epochs=5.0,
        max_epochs_per_stage=200.0,
        seeds=3,
        export=True,
    )


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The comparison protocol: the single-branch baseline and each fusion, trained by one rule,
    scored on test.

    Example (does the ladder help on my data? 5 arms x 3 seeds, each with its own learning-rate
    sweep):
      jpeg-ladder-compare --records records/ --out-dir compare/ --fusions
      concat,shared,weighted,gated --seeds 3
    Every arm is `training` with its branches and fusion; --seed is the first seed, --seeds their
    number.
    """

    records_dir: str = option(
        flag="--records", help="make_tfrecords's --out-dir (with a test split)"
    )
    out_dir: str = option(
        help="comparison.json, comparison.md, the plot and every run under runs/<arm>/seed<k>"
    )
    fusions: tuple[str, ...] = option(FUSIONS, help="fusions to compare with the baseline")
    training: TrainConfig = nested(
        compare_training,
        exclude=("records_dir", "logdir", "branches", "fusion", "learning_rate", "export"),
    )

    def __post_init__(self):
        check_local_output("--out-dir", self.out_dir)
        _distinct("--fusions", self.fusions, FUSIONS)


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
    # Fine-tuning (and training a starting head): the papers' SGD, batch 1024, patience 20, <= 500
    # epochs.
    learning_rate: float = option(0.01, help="fine-tuning SGD learning rate")
    momentum: float = option(0.5, help="fine-tuning SGD momentum")
    batch_size: int = option(1024, help="fine-tuning batch")
    max_epochs: int = option(500, help="fine-tuning epochs at most")
    patience: int = option(20, help="fine-tuning early-stopping patience (epochs)")
    branches: tuple[int, ...] | None = option(
        (0,), help="with --records: comma-separated branches, concatenated"
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
    branches: tuple[int, ...] = option((0,), help="comma-separated branches, concatenated")
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
    head: str = option("linear", choices=HEADS, help="the classifier on the codes")
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

    def __post_init__(self):
        if (
            sum(source is not None for source in (self.records_dir, self.data_dir, self.labels_csv))
            != 1
        ):
            raise errors.UserError("give exactly one of --records, --data-dir or --labels-csv")
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
        positional=True, nargs="+", help="image files (any format Pillow reads)"
    )
    top: int = option(5, help="classes to print per image")

    def __post_init__(self):
        if self.top < 1:
            raise errors.UserError(f"--top must be at least 1, got {self.top}")


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
    """The demo's topology run: random-weight features are small, so a bolder start than the
    thesis's 0.01."""
    return TrainConfig(
        records_dir="",
        logdir="",
        batch_size=16,
        eval_every_steps=5,
        max_epochs_per_stage=4.0,
        learning_rate=0.1,
        momentum=0.9,
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
    num_stages: int = 2
    training: TrainConfig = nested(
        demo_training, include=("max_epochs_per_stage", "learning_rate", "head_init", "progress")
    )
    # The comparison at pool: the baseline, the thesis's concat and the shared head, each with its
    # own learning-rate sweep, shortened to fit the demo's few minutes (jpeg-ladder-compare runs
    # every fusion).
    fusions: tuple[str, ...] = ("concat", "shared")
    seeds: int = 2
    sweep_learning_rates: tuple[float, ...] = (0.03, 0.003)
    sweep_epochs: float = 5.0
    plateau_epochs: float = 5.0
    compare_max_epochs: float = 40.0
