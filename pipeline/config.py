"""Configuration as data: the branch qualities and the offline stage's frozen config."""

import dataclasses

from tfrecords import codec

STORAGE_DTYPES = tuple(codec.STORAGE_DTYPES)  # how values are stored; float32, the lossless default, first

# Branch 0 is the original image; branch i (1..10) is its JPEG re-encoding at QUALITIES[i - 1].
QUALITIES = tuple(range(10, 101, 10))


# Backbones given as a model instead of a keras.applications name: image feature vector models, node pool only
# (bottlenecks.registry.FEATURE_VECTOR_PREFIXES, repeated so that reading flags does not import Keras).
FEATURE_VECTOR_PREFIXES = ("hub:", "savedmodel:")


def branch_names(qualities=QUALITIES) -> tuple[str, ...]:
    return ("original",) + tuple(f"q{quality}" for quality in qualities)


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """The offline stage: which images, which backbone and nodes, and how to store the bottlenecks.

    Example (the thesis's Inception V3 set-up on ImageNet, ~11 CNN passes per image):
      make-tfrecords --data-dir imagenet/ --out-dir records/ --backbone inception_v3 \\
          --nodes pool,mixed9,mixed8,mixed7
    An image feature vector model from TF-Hub or a SavedModel instead (node pool only, 224 px in [0, 1]):
      make-tfrecords --data-dir photos/ --out-dir records/ --backbone savedmodel:models/efficientnet_b0
    """

    out_dir: str
    data_dir: str | None = None  # root/<class>/* or root/train|val/<class>/*
    labels_csv: str | None = None  # file,label[,split]; files relative to the CSV
    backbone: str = "inception_v3"  # a keras.applications name, hub:HANDLE or savedmodel:PATH
    # imagenet | PATH | none for keras.applications backbones (None: imagenet); hub: and savedmodel: models
    # carry their own weights, so they take None.
    weights: str | None = None
    nodes: tuple[str, ...] | None = None  # None: the backbone's default stages
    qualities: tuple[int, ...] = QUALITIES
    input_size: int | None = None  # None: the backbone's default (224 for hub: and savedmodel:)
    # hub: and savedmodel: only: the pixel values the model expects, (low, high); None: (0, 1).
    input_range: tuple[float, float] | None = None
    central_crop: float = 1.0  # fraction of each side kept before resizing (1.0 keeps all)
    num_shards: int | None = None  # for the largest split; None: from shard_size_mb
    shard_size_mb: float = 256.0  # target size of one node's shard file (dense upper bound)
    # validation is carved from the training images by a stable hash of each id; test is the input's own
    # held-out folder or CSV split, or, for a flat root/<class>/* tree, another hash slice.
    validation_percent: float = 10.0
    test_percent: float = 10.0  # only for input without a held-out split of its own
    compression: str = ""  # "" or "GZIP"
    # How values are stored: float32 is lossless; float16 or bfloat16 halve the values' bytes, rounded.
    storage_dtype: str = codec.FLOAT32
    batch_size: int = 8  # images per CNN call (x number of branches)
    seed: int = 0  # random initial weights with weights=none
    progress: bool = True
    runner: str = "local"  # local (this process) or beam (same output, on any Apache Beam runner)
    beam_options: str = ""  # Beam pipeline options, e.g. "--runner=DataflowRunner --project=..."; none: DirectRunner

    def __post_init__(self):
        if (self.data_dir is None) == (self.labels_csv is None):
            raise ValueError("give exactly one of --data-dir or --labels-csv")
        if self.backbone.startswith(FEATURE_VECTOR_PREFIXES):
            if self.weights is not None:
                raise ValueError(f"--weights does not apply to --backbone {self.backbone}: the SavedModel carries "
                                 f"its own weights; leave --weights out")
        elif self.input_range is not None:
            raise ValueError(f"--input-range is for hub: and savedmodel: backbones; {self.backbone} brings its own "
                             f"preprocessing")
        elif self.weights is None:
            object.__setattr__(self, "weights", "imagenet")  # frozen: the one default filled in
        if self.runner not in ("local", "beam"):
            raise ValueError(f"--runner must be local or beam, got {self.runner!r}")
        if self.beam_options and self.runner != "beam":
            raise ValueError("--beam-options needs --runner beam")
        bad = [quality for quality in self.qualities if not 1 <= int(quality) <= 100]
        if bad or not self.qualities:
            raise ValueError(f"--qualities must be integers in 1..100, got {self.qualities}")
        if self.compression not in ("", "GZIP"):
            raise ValueError(f"--compression must be GZIP or empty, got {self.compression!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"--storage-dtype must be one of {', '.join(STORAGE_DTYPES)}, "
                             f"got {self.storage_dtype!r}")
        if not 0 <= self.validation_percent < 100 or not 0 <= self.test_percent < 100 or \
                self.validation_percent + self.test_percent >= 100:
            raise ValueError(f"--validation-percent and --test-percent must be in [0, 100) and leave training "
                             f"images, got {self.validation_percent} and {self.test_percent}")
        if not 0 < self.central_crop <= 1:
            raise ValueError(f"--central-crop must be in (0, 1], got {self.central_crop}")
        if self.batch_size < 1 or (self.num_shards is not None and self.num_shards < 1):
            raise ValueError("--batch-size and --num-shards must be at least 1")


def tiny(out_dir: str, data_dir: str) -> ExtractConfig:
    """For tests: random MobileNetV2 weights on 32 px inputs, two nodes, two shards."""
    return ExtractConfig(out_dir=out_dir, data_dir=data_dir, backbone="mobilenet_v2", weights="none",
                         nodes=("block_16_project_BN", "pool"), input_size=32, num_shards=2,
                         batch_size=4, progress=False)


FUSIONS = ("concat", "shared", "weighted", "gated")
HEADS = ("linear", "mlp")
LABEL_SPACES = ("auto", "dataset", "imagenet")
STRATEGIES = ("mirrored", "multiworker")  # one machine's devices | the cluster in TF_CONFIG
# How multiworker training splits the train split: every worker reads it all (data) or its own shards (file);
# auto: file when there are at least as many train shards as workers.
INPUT_SHARDINGS = ("auto", "data", "file")
# The learning-rate sweep's candidates, log-spaced around each optimizer's usual range.
SWEEP_RATES = {"sgd": (1.0, 0.3, 0.1, 0.03, 0.01, 0.003), "momentum": (0.3, 0.1, 0.03, 0.01, 0.003, 0.001),
               "adam": (0.03, 0.01, 0.003, 0.001, 0.0003)}


def check_local_output(flag: str, path: str) -> None:
    """Output folders are written with local file operations (atomic renames, fsync, shutil): no URLs."""
    if "://" in path:
        raise ValueError(f"{flag} {path}: write the run to a local or shared-filesystem path (a bucket can be "
                         "mounted with gcsfuse or mountpoint-s3); only --records may be a URL")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The block-by-block trainer: which records, which stages and branches, and the thesis's schedule.

    Example (the thesis's Inception V3 schedule: the decision layer, then mixed_10, mixed_9, mixed_8):
      train-block-by-block --records records/ --logdir runs/inception --stages pool,mixed9,mixed8,mixed7
    Each stage starts from the previous stage's best checkpoint with the learning rate divided by 10.
    """

    records_dir: str
    logdir: str
    stages: tuple[str, ...] | None = None  # None: the backbone's default schedule
    branches: tuple[int, ...] | None = None  # None: all; (0,) is the single-branch baseline
    fusion: str = "concat"  # concat (the thesis) | shared | weighted | gated; see pipeline.training.fusion
    head: str = "linear"  # linear | mlp; see pipeline.training.heads
    hidden_units: int = 500  # mlp head
    activation: str = "relu"  # mlp head: relu | sigmoid
    dropout: float = 0.0  # mlp head
    batch_size: int = 100  # global, split across replicas
    optimizer: str = "sgd"  # sgd (the thesis) | momentum | adam
    # Of the first stage, or "auto": the best on validation of a short sweep over sweep_learning_rates.
    learning_rate: float | str = 0.01
    sweep_learning_rates: tuple[float, ...] | None = None  # None: SWEEP_RATES[optimizer]
    sweep_epochs: float = 3.0  # each sweep candidate trains stage 0 this long (with the plateau rule)
    sweep_dir: str | None = None  # None: LOGDIR/sweep; runs with the same rule may share one
    sweep_seed: int | None = None  # None: seed; runs that share a sweep share its seed
    learning_rate_divisor: float = 10.0  # per later stage
    momentum: float | None = None  # None: 0 for sgd (the thesis), 0.9 for momentum
    eval_every_steps: int = 2000  # evaluate and checkpoint (at least once an epoch)
    plateau_epochs: float = 1.0  # a stage ends when validation top-1 has not improved for this long
    max_epochs_per_stage: float = 20.0
    head_init: str = "random"  # or "baseline": the backbone's classifier on the original branch
    imagenet_labels: bool = False  # integer class names are ImageNet indices
    # The head's classes: auto = the backbone's 1000 when the dataset's classes are ImageNet's (wnid folders),
    # else the dataset's own; dataset = always the dataset's own (e.g. a 10-class head on imagenette);
    # imagenet = the backbone's 1000, refused when the classes are not ImageNet's.
    label_space: str = "auto"
    train_batchnorm: bool = False  # BatchNorm of unfrozen blocks stays in inference mode by default
    devices: tuple[str, ...] | None = None  # None: every local GPU, else the CPU
    strategy: str = "mirrored"  # or "multiworker": one process per machine of the cluster in TF_CONFIG
    collective_timeout: float = 600.0  # multiworker: seconds a worker waits for the others at a collective op
    input_sharding: str = "auto"  # multiworker: auto | data | file; see pipeline.training.distribute
    shuffle_buffer: int = 10000  # examples in the training shuffle buffer, at most ...
    shuffle_buffer_mb: float = 1024.0  # ... and at most this many MiB of them (records of deep nodes are large)
    # A split whose decoded bottlenecks fit in this many MiB is decoded once and kept in memory.
    cache_mb: float = 2048.0
    seed: int = 0  # initialisation and shuffling
    seeds: int = 1  # independent runs LOGDIR/seed<k> with seeds seed, seed + 1, ...: reported as mean ± sd
    export: bool = True
    progress: bool = True

    def __post_init__(self):
        check_local_output("--logdir", self.logdir)
        if self.optimizer not in SWEEP_RATES:
            raise ValueError(f"--optimizer must be one of {', '.join(SWEEP_RATES)}, got {self.optimizer!r}")
        if self.fusion not in FUSIONS or self.head not in HEADS:
            raise ValueError(f"--fusion must be one of {', '.join(FUSIONS)} and --head one of {', '.join(HEADS)}, "
                             f"got {self.fusion!r} and {self.head!r}")
        if isinstance(self.learning_rate, str) and self.learning_rate != "auto":
            raise ValueError(f"--learning-rate must be a number or auto, got {self.learning_rate!r}")
        if self.seeds < 1 or self.sweep_epochs <= 0:
            raise ValueError("--seeds must be at least 1 and --sweep-epochs positive")
        if self.label_space not in LABEL_SPACES:
            raise ValueError(f"--label-space must be one of {', '.join(LABEL_SPACES)}, got {self.label_space!r}")
        if self.head_init not in ("random", "baseline"):
            raise ValueError(f"--head-init must be random or baseline, got {self.head_init!r}")
        if self.batch_size < 1 or self.eval_every_steps < 1:
            raise ValueError("--batch-size and --eval-every-steps must be at least 1")
        if (not isinstance(self.learning_rate, str) and self.learning_rate <= 0) or self.learning_rate_divisor <= 0:
            raise ValueError("--learning-rate and its divisor must be positive")
        if self.max_epochs_per_stage <= 0 or self.plateau_epochs <= 0:
            raise ValueError("--max-epochs-per-stage and --plateau-epochs must be positive")
        if self.branches is not None and (not self.branches or len(set(self.branches)) != len(self.branches)):
            raise ValueError(f"--branches must list distinct branch indices, got {self.branches}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "multiworker" and self.devices:
            raise ValueError("--devices is for --strategy mirrored: each worker of --strategy multiworker uses all "
                             "its GPUs, else its CPU; drop --devices")
        if self.shuffle_buffer < 1 or self.shuffle_buffer_mb <= 0:
            raise ValueError(f"--shuffle-buffer must be at least 1 and --shuffle-buffer-mb positive, got "
                             f"{self.shuffle_buffer} and {self.shuffle_buffer_mb}")
        if self.input_sharding not in INPUT_SHARDINGS:
            raise ValueError(f"--input-sharding must be one of {', '.join(INPUT_SHARDINGS)}, "
                             f"got {self.input_sharding!r}")
        if self.strategy != "multiworker" and self.input_sharding != "auto":
            raise ValueError("--input-sharding is for --strategy multiworker: on one machine every replica's batch "
                             "comes from one stream; drop --input-sharding")
        if self.collective_timeout <= 0:
            raise ValueError(f"--collective-timeout must be positive, got {self.collective_timeout}")

    def stage_learning_rate(self, stage_index: int, first: float | None = None) -> float:
        """The thesis's schedule: the first stage's rate divided by the divisor at every later stage."""
        first = self.learning_rate if first is None else first
        return first / self.learning_rate_divisor ** stage_index

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
    return TrainConfig(records_dir=records_dir, logdir=logdir, batch_size=4, eval_every_steps=2,
                       max_epochs_per_stage=1.0, shuffle_buffer=64, progress=False)


PRUNE_METHODS = ("threshold", "most-similar", "similar-complementary", "batch")


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Pruning an MLP head's hidden neurons by distinctiveness: prune, fine-tune, repeat.

    Example (the most-similar pair per cycle on a run trained with an MLP head on `pool`; minutes on a CPU
    for a 1280-500-10 head):
      jpeg-ladder-prune --logdir runs/mlp --method most-similar --out-dir prune/most-similar
    Expected: validation top-1 stays within --tolerance of the unpruned head for most of the neurons.
    """

    out_dir: str
    logdir: str | None = None  # a training run whose first stage reads `pool` with an MLP head
    records_dir: str | None = None  # instead of --logdir: train the starting head here on these records
    method: str = "most-similar"
    similar_degrees: float = 15.0  # threshold: a pair closer than this is similar (one removed, merged)
    complementary_degrees: float = 165.0  # threshold: a pair wider than this is complementary
    complementary: str = "both"  # remove both neurons of a complementary pair, or "one"
    merge: str = "scaled"  # "add" (the papers) or "scaled" (least-squares scale and offset; exact at 0 degrees)
    steps_per_cycle: int = 1  # selections applied (angles updated in between) before each fine-tuning
    max_cycles: int | None = None
    min_neurons: int = 1
    tolerance: float = 0.01  # validation top-1 this far below cycle 0 ends the curve (see pruning.inflection)
    inflection_patience: int = 1  # ... for this many cycles in a row
    stop_at_inflection: bool = True
    # Fine-tuning (and training a starting head): the papers' SGD, batch 1024, patience 20, <= 500 epochs.
    learning_rate: float = 0.01
    momentum: float = 0.5
    batch_size: int = 1024
    max_epochs: int = 500
    patience: int = 20
    # Only with --records: the starting head.
    branches: tuple[int, ...] | None = (0,)
    hidden_units: int = 500
    activation: str = "relu"
    dropout: float = 0.2
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if (self.logdir is None) == (self.records_dir is None):
            raise ValueError("give exactly one of --logdir (a run with an MLP head) or --records")
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"--method must be one of {', '.join(PRUNE_METHODS)}, got {self.method!r}")
        if self.complementary not in ("both", "one"):
            raise ValueError(f"--complementary must be both or one, got {self.complementary!r}")
        if self.merge not in ("add", "scaled"):
            raise ValueError(f"--merge must be add or scaled, got {self.merge!r}")
        if not 0 <= self.similar_degrees < self.complementary_degrees <= 180:
            raise ValueError("need 0 <= --similar-degrees < --complementary-degrees <= 180")
        if min(self.steps_per_cycle, self.min_neurons, self.batch_size, self.max_epochs,
               self.inflection_patience) < 1 or self.patience < 0:
            raise ValueError("--steps-per-cycle, --min-neurons, --batch-size, --max-epochs and --inflection-patience "
                             "must be at least 1, --patience at least 0")
        if self.tolerance < 0:
            raise ValueError(f"--tolerance must be at least 0, got {self.tolerance}")


def tiny_pruning(out_dir: str, logdir: str) -> PruneConfig:
    """For tests: a few short cycles."""
    return PruneConfig(out_dir=out_dir, logdir=logdir, max_cycles=3, max_epochs=3, patience=1, batch_size=16,
                       progress=False)


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """An autoencoder on cached pooled features whose code layer is pruned by distinctiveness.

    Example (MobileNetV2 pool features of the original branch, 256 sigmoid code units to start):
      jpeg-ladder-compress --records records/ --out-dir compress/ --branches 0 --code-size 256
    Writes accuracy (top-1/5/10) of a classifier on the codes against the code size.
    """

    records_dir: str
    out_dir: str
    node: str = "pool"
    branches: tuple[int, ...] = (0,)  # concatenated when more than one
    code_size: int = 256  # the autoencoder's starting hidden (code) size
    epochs: int = 200  # training before pruning
    learning_rate: float = 0.001  # Adam
    batch_size: int = 64
    loss_threshold: float = 0.001  # prune while the validation reconstruction MSE stays under this
    prune_every_epochs: int | None = None  # instead: remove one code unit every N epochs, no threshold
    fine_tune_epochs: int = 5  # after each removal, under the threshold rule
    min_code_size: int = 2
    report_sizes: tuple[int, ...] = ()  # code sizes (besides the first and last) at which to train a classifier
    head: str = "linear"  # the classifier on the codes
    hidden_units: int = 500
    classifier_epochs: int = 500
    patience: int = 20
    write_records: bool = False  # also write the final codes as records (node "pool") the trainer reads
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if not self.branches or len(set(self.branches)) != len(self.branches):
            raise ValueError(f"--branches must list distinct branch indices, got {self.branches}")
        if self.code_size < 1 or not 1 <= self.min_code_size <= self.code_size:
            raise ValueError("need 1 <= --min-code-size <= --code-size")
        if min(self.epochs, self.batch_size, self.fine_tune_epochs, self.classifier_epochs) < 1:
            raise ValueError("--epochs, --batch-size, --fine-tune-epochs and --classifier-epochs must be at least 1")
        if self.prune_every_epochs is not None and self.prune_every_epochs < 1:
            raise ValueError(f"--prune-every-epochs must be at least 1, got {self.prune_every_epochs}")
        if self.loss_threshold <= 0 or self.learning_rate <= 0:
            raise ValueError("--loss-threshold and --learning-rate must be positive")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The comparison protocol: the single-branch baseline and each fusion, trained by one rule, scored on test.

    Example (does the ladder help on my data? 5 arms x 3 seeds, each with its own learning-rate sweep):
      jpeg-ladder-compare --records records/ --out-dir compare/ --fusions concat,shared,weighted,gated --seeds 3
    """

    records_dir: str
    out_dir: str
    fusions: tuple[str, ...] = FUSIONS
    seeds: int = 3
    seed: int = 0
    stages: tuple[str, ...] | None = ("pool",)  # the decision layer alone, unless asked for more
    head: str = "linear"
    hidden_units: int = 500
    dropout: float = 0.0
    label_space: str = "auto"  # see TrainConfig.label_space
    optimizer: str = "adam"  # converges within the plateau rule on every arm; sgd is the thesis's
    sweep_learning_rates: tuple[float, ...] | None = None
    sweep_epochs: float = 5.0
    batch_size: int = 100
    eval_every_steps: int = 2000
    plateau_epochs: float = 5.0
    max_epochs_per_stage: float = 200.0
    progress: bool = True

    def __post_init__(self):
        check_local_output("--out-dir", self.out_dir)
        unknown = [fusion for fusion in self.fusions if fusion not in FUSIONS]
        if unknown or len(set(self.fusions)) != len(self.fusions):
            raise ValueError(f"--fusions must list distinct fusions of {', '.join(FUSIONS)}, got {self.fusions}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
