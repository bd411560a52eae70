"""The trainer's config: which records, stages, branches, fusion and head, and the training rule;
the stages of its schedule."""

import dataclasses
import math

from pipeline import errors
from pipeline.config import options
from pipeline.config import recipes
from pipeline.config.options import option

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
SOLVERS = ("auto", "sgd")


def branch_tokens(text: str) -> tuple[str, ...]:
    """--branches: comma-separated branch names, families (ladder, parts) or indices"""
    return tuple(part.strip() for part in text.split(",") if part.strip())


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
        choices=recipes.RECIPE_NAMES,
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
        distinct=True,
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
    batch_size: int = option(100, minimum=1, help="global batch, split across replicas")
    optimizer: str | None = option(
        None,
        choices=recipes.OPTIMIZERS,
        help="sgd | momentum | adam (default: the recipe's: adam converged, sgd thesis)",
        show_default=False,
    )
    learning_rate: float | str | None = option(
        None,
        positive=True,
        parse=options.number_or_auto,
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
        positive=True,
        help="each --learning-rate auto candidate trains at most this long (default: the "
        "recipe's: a stage's cap converged, 3 thesis)",
        show_default=False,
    )
    sweep_seeds: int | None = option(
        None,
        minimum=1,
        help="seeds each sweep candidate trains with; the choice is the mean over them (default: "
        "the recipe's: 2 converged, 1 thesis)",
        show_default=False,
    )
    learning_rate_divisor: float = option(
        10.0, positive=True, help="the learning rate is divided by this at each later stage"
    )
    momentum: float | None = option(
        None, help="SGD momentum (default: 0 for sgd, 0.9 for momentum)", show_default=False
    )
    eval_every_steps: int = option(
        2000,
        minimum=1,
        help="evaluate and checkpoint every this many steps (at least once an epoch)",
    )
    plateau_epochs: float | None = option(
        None,
        positive=True,
        help="a plateau is this many epochs without improvement of the recipe's validation "
        "metric (default: the recipe's: from the data's size converged, 1 thesis)",
        show_default=False,
    )
    lr_reductions: int | None = option(
        None,
        minimum=0,
        help="plateaus inside a stage met by dividing the learning rate by 10 from the stage's "
        "best checkpoint, before the next plateau ends it (default: the recipe's: 2 converged, "
        "0 thesis)",
        show_default=False,
    )
    max_epochs_per_stage: float | None = option(
        None,
        positive=True,
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
        positive=True,
        help="the solver holds the pool node's train and validation features in memory; above "
        "this many MiB the stage trains by SGD from the records instead",
    )
    folds: int = option(
        1,
        minimum=1,
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
        600.0,
        positive=True,
        help="multiworker: seconds a worker waits for the others before the run stops",
    )
    input_sharding: str = option(
        "auto",
        choices=INPUT_SHARDINGS,
        help="multiworker: data: every worker reads every record and keeps its part of each batch "
        "(the single-machine run); file: each worker reads only its own train shards; auto: file "
        "when there are at least as many train shards as workers",
    )
    shuffle_buffer: int = option(
        10000, minimum=1, help="examples in the training shuffle buffer, at most ..."
    )
    shuffle_buffer_mb: float = option(
        1024.0,
        positive=True,
        help="... and at most this many MiB of them (records of deep nodes are large)",
    )
    cache_mb: float = option(
        2048.0,
        help="keep a split's decoded bottlenecks in memory when they fit in this many MiB (0 "
        "decodes every epoch)",
    )
    seed: int = option(0, help="initialisation and shuffling (the first of --seeds)")
    seeds: int = option(
        1,
        minimum=1,
        help="independent runs (LOGDIR/seed<k>) with seeds seed, seed + 1, ..., reported as "
        "mean ± sd",
    )
    export: bool = option(
        True, help="write no raw-image model into LOGDIR/export (sweeps, seeds, tests)"
    )
    progress: bool = option(True, help="no progress bar")

    def __post_init__(self):
        options.check_local_output("--logdir", self.logdir)
        options.check(self)
        if isinstance(self.learning_rate, str) and self.learning_rate != "auto":
            raise errors.UserError(
                f"--learning-rate must be a number or auto, got {self.learning_rate!r}"
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
    def rule(self) -> recipes.Recipe:
        return recipes.RECIPES[self.recipe]

    def resolved(self) -> "TrainConfig":
        """The config with every field left at None filled in from its recipe (once, at the start
        of a run; the run's identity is the config as given)."""
        filled = {
            name: getattr(self.rule, name)
            for name in recipes.RECIPE_FIELDS
            if getattr(self, name) is None
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
        low, high = recipes.PATIENCE_EPOCHS
        return float(min(high, max(low, math.ceil(recipes.PATIENCE_STEPS / steps_per_epoch))))

    @property
    def momentum_value(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return 0.9 if self.optimizer == "momentum" else 0.0

    @property
    def sweep_rates(self) -> tuple[float, ...]:
        return tuple(self.sweep_learning_rates or self.rule.sweep_rates[self.optimizer])


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
