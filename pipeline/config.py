"""Configuration as data: the branch qualities and the offline stage's frozen config."""

import dataclasses

# Branch 0 is the original image; branch i (1..10) is its JPEG re-encoding at QUALITIES[i - 1].
QUALITIES = tuple(range(10, 101, 10))


def branch_names(qualities=QUALITIES) -> tuple[str, ...]:
    return ("original",) + tuple(f"q{quality}" for quality in qualities)


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """The offline stage: which images, which backbone and nodes, and how to store the bottlenecks.

    Example (the thesis's Inception V3 set-up on ImageNet, ~11 CNN passes per image):
      make-tfrecords --data-dir imagenet/ --out-dir records/ --backbone inception_v3 \\
          --nodes pool,mixed9,mixed8,mixed7
    """

    out_dir: str
    data_dir: str | None = None  # root/<class>/* or root/train|val/<class>/*
    labels_csv: str | None = None  # file,label[,split]; files relative to the CSV
    backbone: str = "inception_v3"
    weights: str = "imagenet"  # imagenet | PATH | none
    nodes: tuple[str, ...] | None = None  # None: the backbone's default stages
    qualities: tuple[int, ...] = QUALITIES
    input_size: int | None = None  # None: the backbone's default
    central_crop: float = 1.0  # fraction of each side kept before resizing (1.0 keeps all)
    num_shards: int | None = None  # for the largest split; None: from shard_size_mb
    shard_size_mb: float = 256.0  # target size of one node's shard file (dense upper bound)
    validation_percent: float = 10.0  # hash split, when the input has no split of its own
    compression: str = ""  # "" or "GZIP"
    batch_size: int = 8  # images per CNN call (x number of branches)
    seed: int = 0  # random initial weights with weights=none
    progress: bool = True

    def __post_init__(self):
        if (self.data_dir is None) == (self.labels_csv is None):
            raise ValueError("give exactly one of --data-dir or --labels-csv")
        bad = [quality for quality in self.qualities if not 1 <= int(quality) <= 100]
        if bad or not self.qualities:
            raise ValueError(f"--qualities must be integers in 1..100, got {self.qualities}")
        if self.compression not in ("", "GZIP"):
            raise ValueError(f"--compression must be GZIP or empty, got {self.compression!r}")
        if not 0 <= self.validation_percent < 100:
            raise ValueError(f"--validation-percent must be in [0, 100), got {self.validation_percent}")
        if not 0 < self.central_crop <= 1:
            raise ValueError(f"--central-crop must be in (0, 1], got {self.central_crop}")
        if self.batch_size < 1 or (self.num_shards is not None and self.num_shards < 1):
            raise ValueError("--batch-size and --num-shards must be at least 1")


def tiny(out_dir: str, data_dir: str) -> ExtractConfig:
    """For tests: random MobileNetV2 weights on 32 px inputs, two nodes, two shards."""
    return ExtractConfig(out_dir=out_dir, data_dir=data_dir, backbone="mobilenet_v2", weights="none",
                         nodes=("block_16_project_BN", "pool"), input_size=32, num_shards=2,
                         batch_size=4, progress=False)


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
    batch_size: int = 100  # global, split across replicas
    learning_rate: float = 0.01  # of the first stage
    learning_rate_divisor: float = 10.0  # per later stage
    momentum: float = 0.0  # SGD as the thesis
    eval_every_steps: int = 2000  # evaluate and checkpoint (at least once an epoch)
    plateau_epochs: float = 1.0  # a stage ends when validation top-1 has not improved for this long
    max_epochs_per_stage: float = 20.0
    head_init: str = "random"  # or "baseline": the backbone's classifier on the original branch
    imagenet_labels: bool = False  # integer class names are ImageNet indices
    train_batchnorm: bool = False  # BatchNorm of unfrozen blocks stays in inference mode by default
    devices: tuple[str, ...] | None = None  # None: every local GPU, else the CPU
    shuffle_buffer: int = 10000
    # A split whose decoded bottlenecks fit in this many MiB is decoded once and kept in memory.
    cache_mb: float = 2048.0
    seed: int = 0
    export: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.head_init not in ("random", "baseline"):
            raise ValueError(f"--head-init must be random or baseline, got {self.head_init!r}")
        if self.batch_size < 1 or self.eval_every_steps < 1:
            raise ValueError("--batch-size and --eval-every-steps must be at least 1")
        if self.learning_rate <= 0 or self.learning_rate_divisor <= 0:
            raise ValueError("--learning-rate and its divisor must be positive")
        if self.max_epochs_per_stage <= 0 or self.plateau_epochs <= 0:
            raise ValueError("--max-epochs-per-stage and --plateau-epochs must be positive")
        if self.branches is not None and (not self.branches or len(set(self.branches)) != len(self.branches)):
            raise ValueError(f"--branches must list distinct branch indices, got {self.branches}")

    def stage_learning_rate(self, stage_index: int) -> float:
        return self.learning_rate / self.learning_rate_divisor ** stage_index


def tiny_training(records_dir: str, logdir: str) -> TrainConfig:
    """For tests: small batches, frequent evaluation, short stages."""
    return TrainConfig(records_dir=records_dir, logdir=logdir, batch_size=4, eval_every_steps=2,
                       max_epochs_per_stage=1.0, shuffle_buffer=64, progress=False)
