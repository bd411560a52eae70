"""Decision heads on pooled features: one linear layer, or one hidden layer between the features and
the classes.

    linear   features [B, D] -> Dense(classes)                                     -> logits
    mlp      features [B, D] -> Dense(hidden, relu|sigmoid) -> Dropout -> Dense(classes) -> logits

A head sees [B, branches * D] under the concat fusion and [B, D] (one branch at a time) under the
others. The trainer's third head, fbsd, reads several nodes' maps instead of pooled features: see
pipeline.training.fbsd.
"""

import dataclasses

import keras
import numpy as np

from pipeline import errors
from pipeline import seeding
from pipeline.config import recipes
from pipeline.config import training as training_config
from pipeline.training import plateau

HEADS = training_config.POOLED_HEADS
ACTIVATIONS = training_config.ACTIVATIONS
HIDDEN_NAME = "hidden"
LOGITS_NAME = "logits"
# heads.fit's learning rates when none is given: the papers' SGD rate and Adam's usual one.
FIT_SGD_RATE = 0.01
FIT_ADAM_RATE = 0.001


@dataclasses.dataclass(frozen=True)
class MlpWeights:
    """The two Dense layers of an MLP head: hidden_kernel [D, H], hidden_bias [H], output_kernel [H,
    K]..."""

    hidden_kernel: np.ndarray
    hidden_bias: np.ndarray
    output_kernel: np.ndarray
    output_bias: np.ndarray

    @property
    def hidden_units(self) -> int:
        return int(self.hidden_bias.shape[0])

    @property
    def input_size(self) -> int:
        return int(self.hidden_kernel.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.output_bias.shape[0])


def check_head(
    kind: str, hidden_units: int = 500, activation: str = "relu", dropout: float = 0.0
) -> None:
    """Raises ValueError, naming the flag to fix, for a head that cannot be built."""
    if kind not in HEADS:
        raise errors.UserError(f"--head must be one of {', '.join(HEADS)}, got {kind!r}")
    if kind == "mlp":
        if activation not in ACTIVATIONS:
            raise errors.UserError(
                f"--activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        if hidden_units < 1:
            raise errors.UserError(f"--hidden-units must be at least 1, got {hidden_units}")
        if not 0 <= dropout < 1:
            raise errors.UserError(f"--dropout must be in [0, 1), got {dropout}")


def build_head(
    kind: str,
    num_classes: int,
    *,
    hidden_units: int = 500,
    activation: str = "relu",
    dropout: float = 0.0,
    seed: int = 0,
    name: str = "decision",
) -> keras.layers.Layer:
    """The decision head; weights appear on its first call (or `head.build((None, input_size))`)."""
    check_head(kind, hidden_units, activation, dropout)
    if kind == "linear":
        return keras.layers.Dense(
            num_classes, name=name, kernel_initializer=keras.initializers.GlorotUniform(seed=seed)
        )
    return keras.Sequential(
        [
            keras.layers.Dense(
                hidden_units,
                activation=activation,
                name=HIDDEN_NAME,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
            keras.layers.Dropout(dropout, seed=seed, name="dropout"),
            # A different seed: the same one would give both layers correlated initial kernels.
            keras.layers.Dense(
                num_classes,
                name=LOGITS_NAME,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            ),
        ],
        name=name,
    )


def description(
    kind: str,
    hidden_units: int = 500,
    activation: str = "relu",
    dropout: float = 0.0,
    nodes: tuple[str, ...] = (),
) -> dict:
    """What results.json records under "head", and (linear, mlp) what `from_description`
    rebuilds."""
    if kind == "linear":
        return {"kind": "linear"}
    if kind == "fbsd":
        return {"kind": "fbsd", "nodes": list(nodes), "channels": int(hidden_units)}
    return {
        "kind": "mlp",
        "hidden_units": int(hidden_units),
        "activation": activation,
        "dropout": float(dropout),
    }


def from_description(
    head: dict, num_classes: int, input_size: int, *, seed: int = 0, name: str = "decision"
) -> keras.layers.Layer:
    """A built head (weights exist, so a checkpoint can be restored into it) from results.json's
    "head"."""
    layer = build_head(
        head.get("kind", "linear"),
        num_classes,
        hidden_units=int(head.get("hidden_units", 500)),
        activation=head.get("activation", "relu"),
        dropout=float(head.get("dropout", 0.0)),
        seed=seed,
        name=name,
    )
    layer.build((None, input_size))
    return layer


def _dense_layers(head: keras.layers.Layer) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    if not isinstance(head, keras.Sequential):
        raise errors.UserError(
            f"{head.name} is a {type(head).__name__}, not an MLP head: build it with --head mlp"
        )
    return head.get_layer(HIDDEN_NAME), head.get_layer(LOGITS_NAME)


def activation_name(head: keras.layers.Layer) -> str:
    return keras.activations.serialize(_dense_layers(head)[0].activation)


def dropout_rate(head: keras.layers.Layer) -> float:
    return float(head.get_layer("dropout").rate)


def get_mlp_weights(head: keras.layers.Layer) -> MlpWeights:
    hidden, logits = _dense_layers(head)
    return MlpWeights(
        *(np.asarray(weight, np.float32) for weight in hidden.get_weights() + logits.get_weights())
    )


def set_mlp_weights(head: keras.layers.Layer, weights: MlpWeights) -> None:
    """Writes weights of the head's own shapes (a pruned head of fewer neurons needs
    `mlp_from_weights`)."""
    hidden, logits = _dense_layers(head)
    hidden.set_weights([weights.hidden_kernel, weights.hidden_bias])
    logits.set_weights([weights.output_kernel, weights.output_bias])


def mlp_from_weights(
    weights: MlpWeights,
    *,
    activation: str = "relu",
    dropout: float = 0.0,
    seed: int = 0,
    name: str = "decision",
) -> keras.Sequential:
    """A new built MLP head holding `weights` (any number of hidden neurons)."""
    head = build_head(
        "mlp",
        weights.num_classes,
        hidden_units=weights.hidden_units,
        activation=activation,
        dropout=dropout,
        seed=seed,
        name=name,
    )
    head.build((None, weights.input_size))
    set_mlp_weights(head, weights)
    return head


def hidden_activations(head: keras.layers.Layer, features, batch_size: int = 4096) -> np.ndarray:
    """The hidden layer's outputs [N, H] for features [N, D] (dropout off)."""
    hidden = _dense_layers(head)[0]
    features = np.asarray(features, np.float32)
    parts = [
        np.asarray(hidden(features[start : start + batch_size]))
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, hidden.units), np.float32)


def fit(
    head: keras.layers.Layer,
    train: tuple,
    validation: tuple,
    *,
    recipe: str = "converged",
    learning_rate: float | None = None,
    momentum: float = 0.5,
    batch_size: int = 1024,
    max_epochs: int = 500,
    patience: int = 20,
    seed: int = 0,
    verbose: int = 0,
    eager: bool = False,
) -> dict:
    """Trains `head` on in-memory (features, labels) under a recipe (config.RECIPES) and puts back
    its best epoch's weights.

    thesis: the related papers' rule, SGD (learning rate 0.01, the given momentum), stopping when
    validation top-1 has not risen for `patience` epochs. converged: Adam (learning rate 0.001),
    the rate divided by 10 from the best weights after half the patience without a lower
    validation loss, stopping after the other half. Both are the stages' plateau rule
    (pipeline.training.plateau) and run at most `max_epochs`. Returns epochs run, the best epoch
    and its validation scores. `eager` runs the steps without tracing them into graphs: for a caller
    that fits hundreds of heads of changing shapes in one process, since every traced graph stays in
    memory (measured: 12 MiB more per fit, with keras.backend.clear_session or without; eager:
    flat, about a quarter slower).
    """
    with seeding.seeded(seed):
        rule = recipes.RECIPES[recipe]
        inputs = keras.Input(shape=(np.shape(train[0])[1],))
        model = keras.Model(inputs, head(inputs))
        if rule.optimizer == "adam":
            rate = FIT_ADAM_RATE if learning_rate is None else learning_rate
            optimizer = keras.optimizers.Adam(learning_rate=rate)
        else:
            rate = FIT_SGD_RATE if learning_rate is None else learning_rate
            optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=momentum)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")],
            run_eagerly=eager,
        )
        # The stages' plateau rule (pipeline.training.plateau) on epochs. Under converged a plateau
        # is half the patience: the first divides the rate by 10, the second ends the fit, so that
        # the fit ends `patience` epochs after its last new best, as the papers' rule does.
        reduce = bool(rule.lr_reductions)
        stopper = plateau.KerasPlateau(
            plateau.Rule(
                rule.plateau_metric,
                max(1, patience // 2) if reduce else patience,
                1 if reduce else 0,
            )
        )
        history = model.fit(
            np.asarray(train[0], np.float32),
            np.asarray(train[1], np.int32),
            batch_size=batch_size,
            epochs=max_epochs,
            validation_data=(
                np.asarray(validation[0], np.float32),
                np.asarray(validation[1], np.int32),
            ),
            callbacks=[stopper],
            shuffle=True,
            verbose=verbose,
        )
        return {
            "epochs": len(history.history["val_loss"]),
            "best_epoch": stopper.best_epoch,
            "best_validation_top1": stopper.best["top1"],
            "best_validation_loss": stopper.best["loss"],
            "recipe": recipe,
        }
