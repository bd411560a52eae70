"""Training recipes: the rules a stage trains by (thesis, converged) and the constants they share.

A TrainConfig field left at None takes its recipe's value (RECIPE_FIELDS).
"""

import dataclasses

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
