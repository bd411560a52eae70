"""Decision heads: shapes, seeded determinism, the linear head as the trainer's decision layer, MLP
weight access."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.training import heads


def _features(rows=6, size=12, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, size)).astype(np.float32)


@pytest.mark.parametrize("kind", heads.HEADS)
def test_head_maps_features_to_class_logits(kind):
    head = heads.build_head(kind, 5, hidden_units=7, dropout=0.2)
    assert tuple(head(_features()).shape) == (6, 5)


def test_mlp_head_is_two_dense_layers_of_the_asked_sizes():
    head = heads.from_description(heads.description("mlp", 7, "sigmoid", 0.2), 5, 12)
    weights = heads.get_mlp_weights(head)
    assert (weights.input_size, weights.hidden_units, weights.num_classes) == (12, 7, 5)
    assert heads.activation_name(head) == "sigmoid" and heads.dropout_rate(head) == pytest.approx(
        0.2
    )
    activations = heads.hidden_activations(head, _features())
    assert activations.shape == (6, 7) and activations.min() > 0 and activations.max() < 1


@pytest.mark.parametrize("kind", heads.HEADS)
def test_same_seed_same_weights_other_seed_other_weights(kind):
    def weights(seed):
        head = heads.build_head(kind, 5, hidden_units=7, seed=seed)
        head.build((None, 12))
        return [np.asarray(weight) for weight in head.weights]

    assert all(np.array_equal(a, b) for a, b in zip(weights(3), weights(3)))
    assert not np.array_equal(weights(3)[0], weights(4)[0])


def test_linear_head_is_the_thesis_decision_layer():
    head = heads.build_head("linear", 5, seed=2)
    assert isinstance(head, keras.layers.Dense) and head.name == "decision" and head.units == 5
    np.testing.assert_array_equal(
        np.asarray(head(_features())),
        np.asarray(heads.build_head("linear", 5, seed=2)(_features())),
    )


def test_mlp_weights_round_trip_and_a_smaller_head_from_weights(tmp_path):
    head = heads.from_description(heads.description("mlp", 7), 5, 12, seed=1)
    path = tf.train.Checkpoint(head=head).write(str(tmp_path / "ckpt"))
    restored = heads.from_description(heads.description("mlp", 7), 5, 12, seed=9)
    tf.train.Checkpoint(head=restored).read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(np.asarray(restored(_features())), np.asarray(head(_features())))

    weights = heads.get_mlp_weights(head)
    smaller = heads.mlp_from_weights(
        heads.MlpWeights(
            weights.hidden_kernel[:, :3],
            weights.hidden_bias[:3],
            weights.output_kernel[:3],
            weights.output_bias,
        )
    )
    assert heads.get_mlp_weights(smaller).hidden_units == 3


def test_bad_head_settings_name_the_flag():
    with pytest.raises(ValueError, match="--head"):
        heads.build_head("conv", 5)
    with pytest.raises(ValueError, match="--activation"):
        heads.build_head("mlp", 5, activation="tanh")
    with pytest.raises(ValueError, match="--dropout"):
        heads.build_head("mlp", 5, dropout=1.0)
