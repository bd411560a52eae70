"""The analyses' configs: the comparison protocol, evaluation, prediction, the report and the
quality histogram."""

import dataclasses

from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.config import options
from pipeline.config import recipes
from pipeline.config import training as training_config
from pipeline.config.options import option


def branch_sets(text: str) -> tuple[tuple[str, ...], ...]:
    """--branch-sets: branch lists separated by ';', e.g. ladder;original,object"""
    return branches_lib.parse_sets(text)


def compare_training() -> training_config.TrainConfig:
    """The one training rule of every arm: the decision layer alone, three seeds, the default recipe
    (converged: each arm's linear layer solved exactly, its L2 strength chosen on validation; one
    run stands for the seeds of an arm that nothing else seeds)."""
    return training_config.TrainConfig(
        records_dir="", logdir="", stages=("pool",), seeds=3, export=True
    )


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
        training_config.FUSIONS[:4],
        distinct=True,
        elements=training_config.FUSIONS,
        help="fusions to compare with the baseline (family too with --branch-sets)",
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
    training: training_config.TrainConfig = options.nested(
        compare_training,
        exclude=("records_dir", "logdir", "branches", "fusion", "export"),
    )
    cost_images: int = option(
        32,
        minimum=0,
        help="test images timed through each arm's export (serving_default at batch 1 and 32) "
        "for its serving cost beside its accuracy: backbone passes and ms per image; 0 leaves "
        "it out",
    )

    def __post_init__(self):
        options.check_local_output("--out-dir", self.out_dir)
        options.check(self)


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
        minimum=0,
        help="images of the evaluated split timed through the export's serving_default at batch "
        "1 and 32 for the cost entry (backbone passes and ms per image); 0 leaves it out",
    )

    def __post_init__(self):
        options.check(self)
        if (
            sum(source is not None for source in (self.records_dir, self.data_dir, self.labels_csv))
            != 1
        ):
            raise errors.UserError("give exactly one of --records, --data-dir or --labels-csv")
        if self.boxes_csv is not None and self.records_dir is None:
            raise errors.UserError(
                "--boxes-csv scores the object boxes the records hold: give --records"
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
    top: int = option(5, minimum=1, help="classes to print per image")
    batch_size: int = option(
        32, minimum=1, help="images sent through the export's serving_default in one request"
    )
    csv: str | None = option(
        None,
        help="write image,label,confidence (the top class and its probability) per image to this "
        "CSV instead of printing the top classes",
    )

    def __post_init__(self):
        options.check(self)


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
# Hidden-layer heads: pruning and compression

PRUNE_METHODS = ("threshold", "most-similar", "similar-complementary", "batch")


@dataclasses.dataclass(frozen=True)
class HeadFit:
    """Fitting a decision head on in-memory features (pipeline.training.heads.fit): the head, and
    the recipe it trains by until its validation metric stops improving."""

    head: str = option(
        "mlp",
        choices=training_config.POOLED_HEADS,
        help="the head: linear, or mlp (one hidden layer)",
    )
    hidden_units: int = option(500, minimum=1, help="--head mlp: hidden neurons")
    activation: str = option("relu", choices=training_config.ACTIVATIONS, help="--head mlp")
    dropout: float = option(0.2, minimum=0, help="--head mlp")
    recipe: str = option(
        "converged",
        choices=recipes.RECIPE_NAMES,
        help="converged: Adam until validation loss stops falling; thesis: the papers' SGD until "
        "validation top-1 stops rising",
    )
    learning_rate: float | None = option(
        None,
        positive=True,
        help="its learning rate (default: the recipe's: Adam 0.001 converged, SGD 0.01 thesis)",
        show_default=False,
    )
    momentum: float = option(0.5, minimum=0, help="SGD momentum (--recipe thesis)")
    batch_size: int = option(1024, minimum=1, help="batch")
    max_epochs: int = option(500, minimum=1, help="epochs at most")
    patience: int = option(20, minimum=0, help="early-stopping patience (epochs)")
    seed: int = option(0, help="initialisation and shuffling")

    def __post_init__(self):
        options.check(self)


def prune_fit() -> HeadFit:
    """Pruning's fine-tuning, and its starting head with --records: an MLP head (hidden_units,
    activation, dropout 0.2) by the recipe, batch 1024, patience 20, at most 500 epochs (the
    papers' figures)."""
    return HeadFit()


def compress_fit() -> HeadFit:
    """The classifier on the codes: a linear head by the recipe (thesis: SGD with momentum 0.9),
    patience 20, at most 500 epochs; its batch and seed are the autoencoder's."""
    return HeadFit(head="linear", dropout=0.0, momentum=0.9)


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
    steps_per_cycle: int = option(
        1, minimum=1, help="selections between two fine-tunings (1 as the papers)"
    )
    max_cycles: int | None = option(None, help="at most this many cycles")
    min_neurons: int = option(1, minimum=1, help="never fewer hidden neurons than this")
    tolerance: float = option(
        0.01, minimum=0, help="validation top-1 drop (fraction) that marks the inflection"
    )
    inflection_patience: int = option(
        1, minimum=1, help="cycles in a row below the tolerance that make the inflection"
    )
    stop_at_inflection: bool = option(
        True, flag="--past-inflection", help="keep pruning after the inflection"
    )
    branches: tuple[str, ...] | None = option(
        ("0",),
        parse=training_config.branch_tokens,
        help="with --records: comma-separated branches (names, families or indices), concatenated",
    )
    progress: bool = option(True, help="no progress lines")
    # Fine-tuning after each cycle, and the starting head with --records; the recipe also says how
    # the inflection is measured (converged: against the best validation top-1 reached so far;
    # thesis: against the unpruned head).
    fit: HeadFit = options.nested(
        prune_fit,
        include=(
            "recipe",
            "learning_rate",
            "momentum",
            "batch_size",
            "max_epochs",
            "patience",
            "hidden_units",
            "activation",
            "dropout",
            "seed",
        ),
    )

    def __post_init__(self):
        options.check(self)
        if (self.logdir is None) == (self.records_dir is None):
            raise errors.UserError(
                "give exactly one of --logdir (a run with an MLP head) or --records"
            )
        if not 0 <= self.similar_degrees < self.complementary_degrees <= 180:
            raise errors.UserError("need 0 <= --similar-degrees < --complementary-degrees <= 180")


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
        parse=training_config.branch_tokens,
        distinct=True,
        help="comma-separated branches (names, families or indices), concatenated",
    )
    code_size: int = option(256, minimum=1, help="the autoencoder's starting code size")
    epochs: int = option(200, minimum=1, help="training before pruning")
    learning_rate: float = option(0.001, positive=True, help="Adam")
    batch_size: int = option(64, minimum=1, help="autoencoder and classifier batch")
    loss_threshold: float = option(
        0.001, positive=True, help="prune while the validation reconstruction MSE stays under this"
    )
    prune_every_epochs: int | None = option(
        None, minimum=1, help="instead of the threshold: remove one code unit every N epochs"
    )
    fine_tune_epochs: int = option(
        5, minimum=1, help="after each removal, under the threshold rule"
    )
    min_code_size: int = option(2, minimum=1, help="never fewer code units than this")
    report_sizes: tuple[int, ...] = option(
        (), help="comma-separated code sizes at which to train a classifier too"
    )
    write_records: bool = option(
        False, help="write the final codes as records (node pool) under OUT/records"
    )
    seed: int = option(0, help="initialisation and shuffling")
    progress: bool = option(True, help="no progress lines")
    # The classifier on the codes at each reported size (its batch and seed: the ones above).
    fit: HeadFit = options.nested(
        compress_fit,
        include=("head", "recipe", "hidden_units", "max_epochs", "patience"),
        flags={"max_epochs": "--classifier-epochs"},
    )

    def __post_init__(self):
        options.check(self)
        if self.min_code_size > self.code_size:
            raise errors.UserError("need 1 <= --min-code-size <= --code-size")

    @property
    def classifier_fit(self) -> HeadFit:
        """The classifier's fit, with the autoencoder's batch and seed."""
        return dataclasses.replace(self.fit, batch_size=self.batch_size, seed=self.seed)
