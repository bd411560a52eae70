"""The plateau rule: when a validation score is a new best, and when the wait for one ends in a
lower learning rate or in the end of training. One rule for the stage loop (pipeline.training.stage)
and, through a Keras callback, for heads.fit.

    metric loss (converged)   a new best lowers the validation loss by more than LOSS_MARGIN of it
                              and by more than min_delta; it also restarts the wait
    metric top1 (thesis)      a higher top-1 is a new best and restarts the wait; the same top-1 at
                              a clearly lower loss replaces the best without restarting it (on a
                              small or saturated validation split top-1 ties are common)
    after `patience` units (steps or epochs) without a restart: from the best weights, the rate
    divided by REDUCTION_FACTOR, `reductions` times; the next plateau ends training at the best.
"""

import dataclasses

import keras
import numpy as np

from pipeline.config import recipes

LOSS_MARGIN = 1e-3  # a validation-loss improvement must lower the loss by this fraction of it
CONTINUE, REDUCE, STOP = "continue", "reduce", "stop"


def lower_loss(loss: float, best_loss: float, min_delta: float = 0.0) -> bool:
    """A validation loss clearly below the best: by more than LOSS_MARGIN of it and than min_delta
    (float noise and a loss drifting by a hair do not count)."""
    return loss < best_loss - max(LOSS_MARGIN * abs(best_loss), min_delta)


def improves(metrics_now: dict, best_top1: float, best_loss: float) -> bool:
    """Whether a checkpoint beats the best: a higher validation top-1, or the same top-1 at a
    clearly lower loss.

    On a small or saturated validation split top-1 ties are common (59 images: 1.7 points each);
    breaking them by loss, as the learning-rate sweep does, keeps the better-fitting checkpoint. The
    relative margin keeps float noise from counting. Only a higher top-1 restarts the plateau count:
    the loss of a saturated split keeps falling long after accuracy stopped changing.
    """
    if metrics_now["top1"] != best_top1:
        return metrics_now["top1"] > best_top1
    return lower_loss(metrics_now["loss"], best_loss)


@dataclasses.dataclass(frozen=True)
class Judgement:
    replaces: bool  # the new best: keep these weights
    restarts: bool  # the wait for a new best starts again


@dataclasses.dataclass(frozen=True)
class Rule:
    """The plateau rule of a recipe's metric; see the module docstring."""

    metric: str  # loss or top1 (recipes.PLATEAU_METRICS)
    patience: float  # units without a restart that make a plateau
    reductions: int  # plateaus met by dividing the rate, before one ends training
    min_delta: float = recipes.LOSS_MIN_DELTA

    def judge(self, metrics_now: dict, best_top1: float, best_loss: float) -> Judgement:
        """metrics_now ({"top1", "loss"}) against the best so far (best_top1 < 0: none yet)."""
        if best_top1 < 0:
            return Judgement(True, True)
        if self.metric == "loss":
            better = lower_loss(metrics_now["loss"], best_loss, min_delta=self.min_delta)
            return Judgement(better, better)
        return Judgement(
            improves(metrics_now, best_top1, best_loss), metrics_now["top1"] > best_top1
        )

    def decide(self, since_restart: float, reductions_done: int) -> str:
        """CONTINUE while waiting; on a plateau REDUCE (the rate, from the best weights) while
        reductions are left, else STOP."""
        if since_restart < self.patience:
            return CONTINUE
        return REDUCE if reductions_done < self.reductions else STOP


class KerasPlateau(keras.callbacks.Callback):
    """The rule on a Keras fit's epochs (its val_loss and val_top1): on a plateau the best weights
    come back and the rate is divided by REDUCTION_FACTOR, or training stops; the model ends at its
    best epoch, which `best_epoch` (1-based) and `best` ({"top1", "loss"}) then name."""

    def __init__(self, rule: Rule):
        super().__init__()
        self.rule = rule

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights = {"top1": -1.0, "loss": np.inf}, 0, None
        self.since_restart, self.reductions = 0, 0

    def on_epoch_end(self, epoch, logs=None):
        metrics_now = {"top1": float(logs["val_top1"]), "loss": float(logs["val_loss"])}
        judgement = self.rule.judge(metrics_now, self.best["top1"], self.best["loss"])
        if judgement.replaces:
            self.best, self.best_epoch = metrics_now, epoch + 1
            self.best_weights = self.model.get_weights()
        self.since_restart = 0 if judgement.restarts else self.since_restart + 1
        decision = self.rule.decide(self.since_restart, self.reductions)
        if decision == REDUCE:
            self.model.set_weights(self.best_weights)
            rate = self.model.optimizer.learning_rate
            rate.assign(float(rate.numpy()) / recipes.REDUCTION_FACTOR)
            self.reductions, self.since_restart = self.reductions + 1, 0
        elif decision == STOP:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
