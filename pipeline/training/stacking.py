"""Stacking: weighted and gated learn their branch weights from held-out branch predictions.

After a stage's head is trained and its best checkpoint restored, the validation images go through
the stage model: each branch's features and predicted probabilities, which the head never fitted.
The combiner (pipeline.training.fusion's BranchWeights or Gate) learns from four fifths of them (the
cross-entropy of the weighted mixture) and stops on the fifth it did not see (a stable hash of the
image id splits them). If it does not beat equal weights on that fifth, equal weights are kept, so
stacking never makes weighted or gated worse than shared on held-out images.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from pipeline.training import fusion as fusion_lib
from pipeline.training import input_pipeline
from pipeline.training import prepare as prepare_lib
from tfrecords import reader

CHECK_FOLDS = 5  # one fifth of the held-out images decides when the combiner stops learning
LEARNING_RATE = 0.01
MAX_EPOCHS = 300
PATIENCE = 20
BATCH_SIZE = 256
L2 = 1e-3  # on the gate's kernels: a few hundred images against some 10^5 weights


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """What the combiner learns from: per image, its branches' features and log-probabilities."""

    features: np.ndarray  # [N, branches, D]
    log_probabilities: np.ndarray  # [N, branches, classes]
    labels: np.ndarray  # [N]
    check: np.ndarray  # [N] bool: the part that decides when to stop

    def part(self, check: bool) -> tuple:
        rows = self.check == check
        return self.features[rows], self.log_probabilities[rows], self.labels[rows]


def held_out_predictions(setup: prepare_lib.Setup, node: str, model: keras.Model) -> HeldOut:
    """The validation split through the stage model (its best checkpoint restored)."""
    features, log_probabilities, labels, image_ids = [], [], [], []
    dataset = input_pipeline.stage_dataset(setup, node, "validation", training=False, with_ids=True)
    for bottlenecks, batch_labels, batch_ids in dataset:
        outputs = model(bottlenecks, training=False)
        features.append(outputs["branch_features"].numpy())
        log_probabilities.append(tf.nn.log_softmax(outputs["branch_logits"], axis=-1).numpy())
        labels.append(batch_labels.numpy())
        image_ids.append(batch_ids)
    ids = tf.concat(image_ids, 0)
    check = reader.in_fold(ids, (CHECK_FOLDS, 0, True)).numpy()
    return HeldOut(
        np.concatenate(features), np.concatenate(log_probabilities), np.concatenate(labels), check
    )


def mixture_loss(combiner, features, log_probabilities, labels) -> tf.Tensor:
    """Mean cross-entropy of the combiner's mixture of the branches' predictions."""
    weights = combiner(features, log_probabilities)
    return tf.reduce_mean(fusion_lib.mixture_loss(weights, log_probabilities, labels))


def fit(combiner: keras.layers.Layer, held_out: HeldOut, seed: int = 0) -> dict:
    """Fits the combiner's weights on held_out (in place) and says how it went.

    The combiner is fitted as a fresh copy outside any distribution strategy and its weights are
    then written into the given layer, which may hold mirrored variables.
    """
    fit_part, check_part = held_out.part(False), held_out.part(True)
    if not len(fit_part[2]) or not len(check_part[2]):
        return {"images": int(len(held_out.labels)), "kept": "equal weights (too few images)"}
    learner = _copy(combiner, held_out, seed)
    start = _equal_weights(learner)
    equal_loss = float(mixture_loss(learner, *check_part))
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    data = tf.data.Dataset.from_tensor_slices(fit_part).shuffle(len(fit_part[2]), seed=seed)
    best_loss, best_weights, best_epoch, waited, epoch = equal_loss, start, 0, 0, 0

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

    for epoch in range(1, MAX_EPOCHS + 1):
        for batch in data.batch(BATCH_SIZE):
            step(*batch)
        loss = float(mixture_loss(learner, *check_part))
        if loss < best_loss:
            best_loss, best_weights, best_epoch, waited = loss, learner.get_weights(), epoch, 0
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    combiner.set_weights(best_weights)
    return {
        "images": int(len(held_out.labels)),
        "check_images": int(len(check_part[2])),
        "epochs": epoch,
        "best_epoch": best_epoch,
        "check_loss": best_loss,
        "equal_weights_check_loss": equal_loss,
        "kept": "learnt weights" if best_epoch else "equal weights (learning did not beat them)",
    }


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
