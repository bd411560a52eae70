"""Stacking: weighted and gated learn their branch weights from held-out branch predictions, and
keep them only when they earn it.

The combiner (pipeline.training.fusion's BranchWeights or Gate) learns from predictions the head
never fitted: out-of-fold predictions over the train and validation images when the head is solved
(pipeline.training.solved: each fold's branches scored by a head solved without that fold), else the
validation split through the stage model. Whether learnt weights beat equal ones is itself decided
out of sample: in turn, the combiner learns on all folds of those images but one and is scored on
the one left out; only if its loss summed over every left-out fold is below equal weights' is it
kept (then learnt on all of them), else equal weights are (= shared, or family). A decision on a
fifth of a small validation split would keep a combiner by chance as often as not.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from pipeline.training import features as features_lib
from pipeline.training import fusion as fusion_lib
from pipeline.training import input_pipeline

FOLDS = 5  # the images the combiner learns from are split in this many folds by their ids' hash
LEARNING_RATE = 0.01
MAX_EPOCHS = 300
PATIENCE = 20
BATCH_SIZE = 256
L2 = 1e-3  # on the gate's kernels: a few hundred images against some 10^5 weights
# Learnt weights are kept when their held-out loss is below equal weights' by more than this many
# standard errors of the per-image difference: a hair's gain on a few hundred images is chance.
EVIDENCE = 2.0


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """What the combiner learns from: per image, its branches' features and log-probabilities,
    predicted by a head that did not fit it, and its fold (0..FOLDS-1)."""

    features: np.ndarray  # [N, branches, D]
    log_probabilities: np.ndarray  # [N, branches, classes]
    labels: np.ndarray  # [N]
    folds: np.ndarray  # [N] int
    source: str  # what the predictions are, in words

    def rows(self, keep) -> tuple:
        return self.features[keep], self.log_probabilities[keep], self.labels[keep]


def fold_of(image_ids: np.ndarray, count: int = FOLDS) -> np.ndarray:
    """Each image's fold by the stable hash of its id (pipeline.training.features.in_fold)."""
    folds = np.zeros(len(image_ids), np.int64)
    for index in range(count):
        folds[features_lib.in_fold(image_ids, (count, index, True))] = index
    return folds


def held_out_predictions(setup, node: str, model: keras.Model) -> HeldOut:
    """The validation split through the stage model (its best checkpoint restored): an SGD head's
    held-out predictions."""
    features, log_probabilities, labels, image_ids = [], [], [], []
    dataset = input_pipeline.stage_dataset(setup, node, "validation", training=False, with_ids=True)
    for bottlenecks, batch_labels, batch_ids in dataset:
        outputs = model(bottlenecks, training=False)
        features.append(outputs["branch_features"].numpy())
        log_probabilities.append(tf.nn.log_softmax(outputs["branch_logits"], axis=-1).numpy())
        labels.append(batch_labels.numpy())
        image_ids.append(batch_ids.numpy().astype(str))
    ids = np.concatenate(image_ids)
    return HeldOut(
        np.concatenate(features),
        np.concatenate(log_probabilities),
        np.concatenate(labels),
        fold_of(ids),
        "the validation split's predictions",
    )


def mixture_loss(combiner, features, log_probabilities, labels) -> tf.Tensor:
    """Mean cross-entropy of the combiner's mixture of the branches' predictions."""
    return tf.reduce_mean(image_losses(combiner, features, log_probabilities, labels))


def image_losses(combiner, features, log_probabilities, labels) -> tf.Tensor:
    """Per image, the cross-entropy of the combiner's mixture of the branches' predictions."""
    weights = combiner(features, log_probabilities)
    return fusion_lib.mixture_loss(weights, log_probabilities, labels)


def fit(combiner: keras.layers.Layer, held_out: HeldOut, seed: int = 0) -> dict:
    """Decides between learnt and equal weights out of sample, puts the winner's weights into
    `combiner` (in place) and says how it went.

    The combiner is fitted as fresh copies outside any distribution strategy and the kept weights
    are then written into the given layer, which may hold mirrored variables.
    """
    count = len(held_out.labels)
    present = sorted(set(held_out.folds.tolist()))
    outcome = {"images": int(count), "source": held_out.source, "folds": len(present)}
    if len(present) < 3:  # each fold learns on the others but one, and checks on that one
        combiner.set_weights(_equal_weights(_copy(combiner, held_out, seed)))
        return {**outcome, "kept": "equal weights (too few images to learn and check them)"}
    gains, learnt, equal = [], [], []  # per image left out: equal weights' loss minus learnt's
    for fold in present:
        learner = _copy(combiner, held_out, seed)
        left_out = held_out.rows(held_out.folds == fold)
        equal.append(image_losses(learner, *left_out).numpy())
        _learn(learner, held_out, held_out.folds != fold, _next(present, fold), seed)
        learnt.append(image_losses(learner, *left_out).numpy())
        gains.append(equal[-1] - learnt[-1])
    gains = np.concatenate(gains)
    margin = EVIDENCE * gains.std(ddof=1) / np.sqrt(count)
    outcome.update(
        held_out_loss=float(np.concatenate(learnt).mean()),
        equal_weights_held_out_loss=float(np.concatenate(equal).mean()),
        required_gain=float(margin),
    )
    learner = _copy(combiner, held_out, seed)
    if gains.mean() > margin:
        outcome.update(_learn(learner, held_out, np.ones(count, bool), present[0], seed))
        outcome["kept"] = "learnt weights"
    else:
        _equal_weights(learner)
        outcome["kept"] = (
            f"equal weights (learning did not beat them by {EVIDENCE:g} standard errors on the "
            "folds left out)"
        )
    combiner.set_weights(learner.get_weights())
    return outcome


def _next(present: list[int], fold: int) -> int:
    """The fold after `fold` among those present: where a learner that leaves `fold` out stops."""
    return present[(present.index(fold) + 1) % len(present)]


def _learn(learner, held_out: HeldOut, rows: np.ndarray, check_fold: int, seed: int) -> dict:
    """Adam on the mixture loss of `rows` outside check_fold, stopping when the loss on check_fold
    has not fallen for PATIENCE epochs; the learner keeps its best epoch's weights."""
    fit_rows = held_out.rows(rows & (held_out.folds != check_fold))
    check_rows = tuple(
        tf.constant(part) for part in held_out.rows(rows & (held_out.folds == check_fold))
    )
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    data = (
        tf.data.Dataset.from_tensor_slices(fit_rows)
        .shuffle(len(fit_rows[2]), seed=seed)
        .batch(BATCH_SIZE)
    )
    best_loss = float(mixture_loss(learner, *check_rows))
    best_weights, best_epoch, waited, epoch = learner.get_weights(), 0, 0, 0

    @tf.function
    def step(features, log_probabilities, labels):
        with tf.GradientTape() as tape:
            loss = mixture_loss(learner, features, log_probabilities, labels)
            loss += L2 * tf.add_n(
                [
                    tf.reduce_sum(weight**2)
                    for weight in learner.trainable_weights
                    if len(weight.shape) == 2
                ]
                or [tf.constant(0.0)]
            )
        gradients = tape.gradient(loss, learner.trainable_weights)
        optimizer.apply_gradients(zip(gradients, learner.trainable_weights))

    # Traced too: eagerly, the check's loss took longer than an epoch's steps.
    check_loss = tf.function(lambda: mixture_loss(learner, *check_rows))

    for epoch in range(1, MAX_EPOCHS + 1):
        for batch in data:
            step(*batch)
        loss = float(check_loss())
        if loss < best_loss:
            best_loss, best_weights, best_epoch, waited = loss, learner.get_weights(), epoch, 0
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    learner.set_weights(best_weights)
    return {"epochs": epoch, "best_epoch": best_epoch, "check_loss": best_loss}


def _copy(combiner: keras.layers.Layer, held_out: HeldOut, seed: int) -> keras.layers.Layer:
    """A fresh combiner of the same kind and shape, built on held_out's shapes."""
    num_branches = held_out.features.shape[1]
    family_ids = combiner.families.family_ids
    if isinstance(combiner, fusion_lib.Gate):
        copy = fusion_lib.Gate(
            num_branches,
            seed=seed,
            sees_predictions=combiner.sees_predictions,
            family_ids=family_ids,
        )
    else:
        copy = fusion_lib.BranchWeights(num_branches, family_ids=family_ids)
    copy(held_out.features[:1], held_out.log_probabilities[:1])  # builds it
    return copy


def _equal_weights(learner: keras.layers.Layer) -> list:
    """The learner's weights with every branch weighed the same (its start), as a list to
    restore."""
    if isinstance(learner, fusion_lib.Gate):
        learner.score.kernel.assign(tf.zeros_like(learner.score.kernel))
        learner.score.bias.assign(tf.zeros_like(learner.score.bias))
    for weight in learner.weights:
        if weight.name in ("branch_prior", "branch_logits"):
            weight.assign(tf.zeros_like(weight))
    return learner.get_weights()
