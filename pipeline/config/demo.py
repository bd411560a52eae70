"""The demo's config: the whole method end to end on a small dataset, its records and its
comparison each a template of the config its stage takes (make-tfrecords's, the trainer's)."""

import dataclasses

from pipeline.config import offline as offline_config
from pipeline.config import options
from pipeline.config import training as training_config
from pipeline.config.options import option


def demo_extract(**changes) -> offline_config.ExtractConfig:
    """The demo's records: random ResNet-50 V2 weights at 64 px, two shards, a fifth of the training
    images for validation and, since a flat synthetic tree has no held-out folder, 30 % of them as
    the test split the verdict needs. Its source and output are the demo's. An image feature vector
    model (hub:, savedmodel:) carries its own weights: there the random ones are left out."""
    settings = dict(
        out_dir="",
        data_dir="",
        backbone="resnet50_v2",
        weights="none",
        input_size=64,
        num_shards=2,
        validation_percent=20.0,
        test_percent=30.0,
    )
    settings.update(changes)
    if settings["backbone"].startswith(offline_config.FEATURE_VECTOR_PREFIXES) and (
        "weights" not in changes
    ):
        settings["weights"] = None
    return offline_config.ExtractConfig(**settings)


def demo_training() -> training_config.TrainConfig:
    """The demo's one training rule for every arm: the default recipe (each linear layer solved),
    with the SGD of later stages shortened to fit a few minutes on 2 cores (a short sweep of two
    rates, five epochs of patience, one reduction of the rate, two seeds)."""
    return training_config.TrainConfig(
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
    """Defaults run anywhere, offline, in about a minute on 2 cores: synthetic images, random
    weights.

    The synthetic classes differ in colour and texture as well as shape, which random ResNet-50 V2
    features keep (random MobileNetV2 ones vanish); with --data-dir and --weights it runs the same
    on real data.
    """

    out_dir: str = option("demo", help="where everything goes")
    data_dir: str | None = option(
        None,
        help="a real dataset (root/<class>/* or root/train|val/<class>/*) instead of the "
        "synthetic one",
    )
    images_per_class: int = option(60, minimum=1, help="synthetic images per class")
    num_stages: int = option(
        1,
        minimum=1,
        help="stages of the backbone's schedule every arm trains (1: the decision layer)",
    )
    # The comparison: the baseline, the thesis's concat and the shared head (jpeg-ladder-compare
    # runs every fusion), every arm by demo_training's rule.
    fusions: tuple[str, ...] = option(
        ("concat", "shared"),
        distinct=True,
        elements=training_config.FUSIONS,
        help="fusions compared",
    )
    extract: offline_config.ExtractConfig = options.nested(
        demo_extract, include=("backbone", "weights", "input_size")
    )
    training: training_config.TrainConfig = options.nested(
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

    def __post_init__(self):
        options.check(self)
