"""How the decision layer combines the branches: concat (the thesis), shared, weighted or gated.

    features [B, branches, D]  (every branch through the one shared tail)
    concat    head(features flattened to [B, branches * D])                  -> logits [B, classes]
    shared    head(each branch) -> per-branch probabilities -> their mean
    weighted  shared, averaged with learned per-branch weights (softmax over branches)
    gated     shared, averaged with per-image weights from a small gating network
    family    shared, averaged within each family of branches (the ladder, the object crop, the
              parts, the mirror: pipeline.branches), then across families with equal weights

When the branches come from more than one family, weighted and gated learn one weight per family
(each family's branches share it equally), so a family of ten JPEG branches and one object crop
start, like family, at half the weight each.

For shared, weighted and gated the model's output is the log of the averaged probabilities, so that
softmax, top-k and the cross-entropy of the output all read the prediction directly. The head learns
from every branch as a sample (the mean of the branches' cross-entropies). The weights or the gate
learn from the cross-entropy of the averaged prediction with the branches' probabilities held fixed:

- stacked (the converged recipe): after the head, from held-out branch predictions (see
  pipeline.training.stacking), where branches disagree; the gate sees each branch's features and
  its predicted log-probabilities. On the training images a head that fits them gets every branch
  right, so there the weights would have nothing to learn.
- joint (the thesis recipe, as before): with the head, on the training images; the gate sees the
  features.

Weighted with equal weights predicts exactly as shared (as family, when it learns family weights).
"""

import keras
import numpy as np
import tensorflow as tf

from pipeline import errors
from pipeline.config import training as training_config
from pipeline.training import fbsd

FUSIONS = training_config.FUSIONS
COMBINED = ("weighted", "gated")  # the fusions that learn branch weights
GATE_HIDDEN_UNITS = 64


def family_weights(family_ids) -> np.ndarray:
    """Each branch's weight under family: 1 / (number of families x the size of its family)."""
    ids = np.asarray(family_ids)
    sizes = np.bincount(ids)
    return (1.0 / (len(sizes) * sizes[ids])).astype(np.float32)


class _Families:
    """Spreads one weight per family over the family's branches equally: [families] -> [branches].

    Without families (None, or a single one) every branch is its own family.
    """

    def __init__(self, num_branches: int, family_ids=None):
        ids = np.arange(num_branches) if family_ids is None else np.asarray(family_ids)
        if len(set(ids.tolist())) < 2:
            ids = np.arange(num_branches)
        self.family_ids = tuple(int(i) for i in ids)
        self.num_families = int(ids.max()) + 1
        membership = np.eye(self.num_families, dtype=np.float32)[ids]  # [branches, families]
        # [branches, families]: spreads a family's weight over its branches, and (multiplied the
        # other way) takes the mean of its branches.
        self.spread = membership / membership.sum(axis=0)

    def to_branches(self, family_weights):
        """[B, families] -> [B, branches]."""
        return keras.ops.matmul(family_weights, keras.ops.transpose(self.spread))

    def family_mean(self, branch_values):
        """[B, branches] -> [B, families]: each family's mean."""
        return keras.ops.matmul(branch_values, self.spread)


class BranchWeights(keras.layers.Layer):
    """Learned branch weights, a softmax over one logit per branch, or per family when the branches
    come from several (all equal at the start)."""

    def __init__(self, num_branches: int, family_ids=None, **kwargs):
        super().__init__(**kwargs)
        self.num_branches = num_branches
        self.families = _Families(num_branches, family_ids)
        self.logits = self.add_weight(
            shape=(self.families.num_families,), initializer="zeros", name="branch_logits"
        )

    def call(self, features, log_probabilities=None):
        weights = keras.ops.softmax(self.logits)[None, :]
        weights = self.families.to_branches(weights)
        return keras.ops.broadcast_to(weights, (keras.ops.shape(features)[0], self.num_branches))


class Gate(keras.layers.Layer):
    """Per-image branch weights: a small network scores each branch (plus a per-branch prior).

    With `sees_predictions` a branch is scored from its features and its predicted log-probabilities
    (where it disagrees with the others shows there); else from its features alone. The score layer
    starts at zero: every branch weighs the same until the gate has learnt otherwise.
    """

    def __init__(
        self,
        num_branches: int,
        seed: int = 0,
        sees_predictions: bool = False,
        family_ids=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sees_predictions = sees_predictions
        self.families = _Families(num_branches, family_ids)
        self.hidden = keras.layers.Dense(
            GATE_HIDDEN_UNITS,
            activation="relu",
            name="gate_hidden",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        )
        self.score = keras.layers.Dense(1, name="gate_score", kernel_initializer="zeros")
        self.prior = self.add_weight(
            shape=(self.families.num_families,), initializer="zeros", name="branch_prior"
        )

    def call(self, features, log_probabilities=None):
        if self.sees_predictions:
            features = keras.ops.concatenate([features, log_probabilities], axis=-1)
        scores = keras.ops.squeeze(self.score(self.hidden(features)), -1)
        scores = self.families.family_mean(scores) + self.prior[None, :]
        return self.families.to_branches(keras.ops.softmax(scores, axis=-1))


def check(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise errors.UserError(f"unknown fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")
    return fusion


def combiner(
    fusion: str, num_branches: int, seed: int = 0, stacked: bool = False, family_ids=None
) -> keras.layers.Layer | None:
    """The layer that weighs the branches (None for concat, shared and family, which have none to
    learn); family_ids: each branch's family (pipeline.branches.family_ids), for family weights."""
    if check(fusion) == "weighted":
        return BranchWeights(num_branches, family_ids=family_ids, name="branch_weights")
    if fusion == "gated":
        return Gate(
            num_branches,
            seed=seed,
            sees_predictions=stacked,
            family_ids=family_ids,
            name="gate",
        )
    return None


def mixture_log_probabilities(weights, branch_logits):
    """log of the weighted mean of the branches' probabilities: [B, branches] x [B, branches, C]."""
    probabilities = keras.ops.softmax(branch_logits, axis=-1)
    mixture = keras.ops.sum(weights[..., None] * probabilities, axis=1)
    return keras.ops.log(keras.ops.maximum(mixture, 1e-12))


def outputs(
    fusion: str, features, head, branch_combiner=None, num_branches: int = 1, family_ids=None
) -> dict:
    """The stage model's outputs from the pooled features [B, branches, D].

    {"logits": [B, classes]} for concat; for the others also {"branch_logits": [B, branches,
    classes], "branch_weights": [B, branches]}, with "logits" the log of the weighted mean of the
    branches' probabilities; weighted and gated also give "branch_features" (what the combiner
    reads, for learning it apart from the head).
    """
    if check(fusion) == "concat":
        flat = keras.ops.reshape(features, (-1, num_branches * int(features.shape[-1])))
        return {"logits": head(flat)}
    # The one head, applied to every branch.
    return combine(fusion, head(features), features, branch_combiner, num_branches, family_ids)


def combine(
    fusion: str,
    branch_logits,
    features,
    branch_combiner=None,
    num_branches: int = 1,
    family_ids=None,
) -> dict:
    """outputs() of every fusion but concat, from each branch's logits [B, branches, classes] and
    features [B, branches, D] (what a gate reads)."""
    extra = {}
    if fusion == "shared":
        weights = keras.ops.ones_like(branch_logits[..., 0]) / num_branches
    elif fusion == "family":
        fixed = family_weights(family_ids if family_ids is not None else [0] * num_branches)
        weights = keras.ops.ones_like(branch_logits[..., 0]) * fixed[None, :]
    else:
        # The combiner learns from the averaged prediction only (see the module docstring).
        fixed_features = keras.ops.stop_gradient(features)
        log_probabilities = keras.ops.stop_gradient(keras.ops.log_softmax(branch_logits, axis=-1))
        weights = branch_combiner(fixed_features, log_probabilities)
        extra = {"branch_features": fixed_features}
    return {
        "logits": mixture_log_probabilities(weights, branch_logits),
        "branch_logits": branch_logits,
        "branch_weights": weights,
        **extra,
    }


def per_example_loss(fusion: str, model_outputs: dict, labels, joint: bool = True) -> tf.Tensor:
    """The training loss of each example (see the module docstring): with `joint` the combiner of
    weighted and gated learns with the head, else the head alone learns (as under shared)."""
    if "branch_logits" not in model_outputs:  # concat
        return keras.losses.sparse_categorical_crossentropy(
            labels, model_outputs["logits"], from_logits=True
        )
    branch_logits = model_outputs["branch_logits"]
    num_branches = tf.shape(branch_logits)[1]
    branch_labels = tf.repeat(labels[:, None], num_branches, axis=1)
    if "branch_level_logits" in model_outputs:  # the FBSD head: its own losses on every branch
        per_branch = fbsd.per_example_loss(
            {
                "level_logits": _flat(model_outputs["branch_level_logits"]),
                "concat_logits": _flat(model_outputs["branch_concat_logits"]),
            },
            tf.reshape(branch_labels, [-1]),
        )
        per_branch = tf.reshape(per_branch, [-1, num_branches])
    else:
        per_branch = keras.losses.sparse_categorical_crossentropy(
            branch_labels, branch_logits, from_logits=True
        )
    loss = tf.reduce_mean(per_branch, axis=1)
    if fusion in COMBINED and joint:
        loss += mixture_loss(
            model_outputs["branch_weights"], tf.stop_gradient(branch_logits), labels
        )
    return loss


def _flat(per_branch):
    """[B, branches, ...] -> [B * branches, ...]."""
    return tf.reshape(per_branch, [-1] + list(per_branch.shape[2:]))


def mixture_loss(weights, branch_logits, labels) -> tf.Tensor:
    """Per example, the cross-entropy of the weighted mixture of the branches' predictions."""
    fixed = tf.nn.softmax(branch_logits, axis=-1)
    mixture = tf.reduce_sum(weights[..., None] * fixed, axis=1)
    picked = tf.gather(mixture, tf.cast(labels, tf.int32)[:, None], batch_dims=1)[:, 0]
    return -tf.math.log(tf.maximum(picked, 1e-12))
