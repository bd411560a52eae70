"""The FBSD head on cached maps: the output contract, FBSM's boosting, FDM and top-k pooling against
NumPy, training on a toy problem, a mirrored step, and a SavedModel round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import errors
from pipeline.training import distribute
from pipeline.training import fbsd

# Three levels, shallow to deep; the first name has a character Keras does not take in a name.
SHAPES = {"block2/out": (14, 14, 32), "block3_out": (7, 7, 48), "block4_out": (7, 7, 64)}
# Small maps for the tests that train: two levels, as tracing a step is most of their time.
SMALL_SHAPES = {"shallow": (8, 8, 8), "deep": (4, 4, 12)}
CLASSES = 4
CHANNELS = 16


def _maps(batch=3, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {
        node: rng.uniform(size=(batch,) + shape).astype(np.float32)
        for node, shape in shapes.items()
    }


def _numpy(outputs):
    return {name: np.asarray(value) for name, value in outputs.items()}


def _softmax(x, axis):
    exponentials = np.exp(x - x.max(axis=axis, keepdims=True))
    return exponentials / exponentials.sum(axis=axis, keepdims=True)


def test_outputs_and_inputs_follow_the_contract():
    model = fbsd.build(SHAPES, CLASSES, channels=CHANNELS)
    outputs = _numpy(model(_maps(), training=False))
    assert outputs["logits"].shape == (3, CLASSES)
    assert outputs["level_logits"].shape == (3, len(SHAPES), CLASSES)
    assert outputs["concat_logits"].shape == (3, CLASSES)
    assert sorted(layer.name for layer in model.inputs) == [
        "block2_out",
        "block3_out",
        "block4_out",
    ]
    assert outputs["features"].shape == (3, len(SHAPES) * CHANNELS)


def test_one_level_has_no_diversification_and_the_same_contract():
    shapes = {"block4_out": SHAPES["block4_out"]}
    model = fbsd.build(shapes, CLASSES, channels=CHANNELS)
    outputs = _numpy(model(_maps(shapes=shapes), training=False))
    assert outputs["level_logits"].shape == (3, 1, CLASSES)
    assert outputs["features"].shape == (3, CHANNELS)
    assert not any(isinstance(layer, fbsd.Diversify) for layer in model.layers)


def test_logits_are_the_sum_of_the_level_and_concat_logits():
    outputs = _numpy(fbsd.build(SHAPES, CLASSES, channels=CHANNELS)(_maps(), training=False))
    np.testing.assert_allclose(
        outputs["logits"],
        outputs["level_logits"].sum(axis=1) + outputs["concat_logits"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        model = fbsd.build(SMALL_SHAPES, CLASSES, channels=CHANNELS, seed=seed)
        return [np.asarray(weight) for weight in model.weights]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_boost_scales_the_strip_of_a_one_hot_importance_by_one_plus_alpha():
    maps = np.arange(1, 8 * 3 * 2 + 1, dtype=np.float32).reshape(1, 8, 3, 2)
    importance = np.array([[0.0, 0.0, 1.0, 0.0]], np.float32)  # strip 2: rows 4 and 5
    boosted = np.asarray(fbsd.boost(maps, importance, alpha=0.5))
    np.testing.assert_allclose(boosted[:, 4:6], 1.5 * maps[:, 4:6])
    np.testing.assert_array_equal(boosted[:, :4], maps[:, :4])
    np.testing.assert_array_equal(boosted[:, 6:], maps[:, 6:])


def test_boosting_picks_the_strip_with_the_largest_importance():
    rng = np.random.default_rng(1)
    maps = rng.uniform(size=(2, 8, 5, 3)).astype(np.float32)
    scores = np.zeros((2, 8, 5, 1), np.float32)
    scores[0, 2:4] = 100.0  # example 0: strip 1 stands out
    scores[1, 6:8] = 100.0  # example 1: strip 3
    boosted = np.asarray(fbsd.StripBoost(strips=4, alpha=0.5)([maps, scores]))
    for example, (start, stop) in enumerate([(2, 4), (6, 8)]):
        ratio = boosted[example] / maps[example]
        np.testing.assert_allclose(ratio[start:stop], 1.5, rtol=1e-6)
        np.testing.assert_allclose(np.delete(ratio, np.s_[start:stop], axis=0), 1.0, rtol=1e-6)


def test_boost_weights_strips_by_the_softmax_of_their_mean_scores():
    # As the authors' code: X + alpha * softmax(strip means) * X, here with strips of 2, 2, 2 and 1
    # rows on a 7-row map.
    rng = np.random.default_rng(2)
    maps = rng.uniform(size=(2, 7, 4, 3)).astype(np.float32)
    scores = rng.uniform(size=(2, 7, 4, 1)).astype(np.float32)
    strip_of_row = np.array([0, 0, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(fbsd.strip_membership(7, 4).argmax(axis=1), strip_of_row)
    means = np.stack([scores[:, strip_of_row == strip].mean(axis=(1, 2, 3)) for strip in range(4)])
    importance = _softmax(means.T, axis=1)
    expected = maps * (1 + 0.5 * importance[:, strip_of_row])[:, :, None, None]
    boosted = fbsd.StripBoost(strips=4, alpha=0.5)([maps, scores])
    np.testing.assert_allclose(np.asarray(boosted), expected, rtol=1e-5)


def _numpy_fdm(maps, diversity):
    """The authors' FDM, in their channels-first layout: fm [C, S] per example."""
    flat = [level.reshape(level.shape[0], -1, level.shape[-1]).transpose(0, 2, 1) for level in maps]
    results = [level.copy() for level in flat]
    for first in range(len(flat)):
        for second in range(first + 1, len(flat)):
            fm1, fm2 = flat[first], flat[second]
            fm1_norm = fm1 / np.linalg.norm(fm1, axis=1, keepdims=True)
            fm2_norm = fm2 / np.linalg.norm(fm2, axis=1, keepdims=True)
            affinity = -fm1_norm.transpose(0, 2, 1) @ fm2_norm  # [B, S, M]
            new_fm2 = fm1 @ _softmax(affinity, axis=1)
            new_fm1 = fm2 @ _softmax(affinity.transpose(0, 2, 1), axis=1)
            results[first] += diversity * new_fm1
            results[second] += diversity * new_fm2
    return [result.transpose(0, 2, 1).reshape(level.shape) for result, level in zip(results, maps)]


def test_fdm_has_no_weights_and_matches_numpy():
    rng = np.random.default_rng(3)
    maps = [
        rng.uniform(size=(2,) + shape).astype(np.float32)
        for shape in [(4, 4, 5), (3, 2, 5), (2, 2, 5)]
    ]
    layer = fbsd.Diversify(diversity=0.3)
    diversified = layer(maps)
    assert layer.weights == []
    for result, expected in zip(diversified, _numpy_fdm(maps, 0.3)):
        np.testing.assert_allclose(np.asarray(result), expected, rtol=1e-5, atol=1e-6)
    model = fbsd.build(SHAPES, CLASSES, channels=CHANNELS)
    assert model.get_layer("diversify").weights == []


@pytest.mark.parametrize("top_k, pooled", [(4, 4), (0.25, 5), (1, 1)])
def test_top_k_pool_matches_numpy(top_k, pooled):
    maps = np.random.default_rng(4).normal(size=(2, 5, 4, 3)).astype(np.float32)
    k = fbsd.positions_pooled(top_k, 5, 4)
    assert k == pooled
    flat = maps.reshape(2, 20, 3)
    expected = np.sort(flat, axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(np.asarray(fbsd.TopKPool(k)(maps)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "arguments",
    [
        {"top_k": 50},  # more than a 7x7 map's positions
        {"strips": 8},  # more strips than a 7-row map has rows
        {"strips": (4, 4)},  # two counts for three levels
        {"channels": 0},
    ],
)
def test_impossible_settings_are_user_errors(arguments):
    with pytest.raises(errors.UserError):
        fbsd.build(SHAPES, CLASSES, **arguments)


def _marked_problem(examples=32, seed=5):
    """Noise maps; the class is a bright channel at a random position of the deep level."""
    rng = np.random.default_rng(seed)
    maps = _maps(examples, seed, SMALL_SHAPES)
    labels = rng.integers(0, CLASSES, size=examples)
    height, width, _ = SMALL_SHAPES["deep"]
    rows, columns = rng.integers(0, height, examples), rng.integers(0, width, examples)
    maps["deep"][np.arange(examples), rows, columns, labels] += 4.0
    return maps, labels.astype(np.int32)


def _replica_step(model, optimizer, global_batch):
    def step(maps, labels):
        with tf.GradientTape() as tape:
            outputs = model(maps, training=True)
            per_example = fbsd.per_example_loss(outputs, labels)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


@pytest.fixture(scope="module")
def trained():
    """A small model after 200 Adam steps on the marked problem, with its training data."""
    maps, labels = _marked_problem()
    model = fbsd.build(SMALL_SHAPES, CLASSES, channels=8, seed=1)
    optimizer = keras.optimizers.Adam(1e-2)
    # Built before the first step: building inside it would trace the step twice.
    optimizer.build(model.trainable_variables)
    step = tf.function(_replica_step(model, optimizer, len(labels)))
    for _ in range(200):
        loss = step(maps, labels)
    assert np.isfinite(float(loss))
    return model, maps, labels


def test_model_learns_a_class_marked_in_one_level(trained):
    model, maps, labels = trained
    predictions = np.asarray(model(maps, training=False)["logits"]).argmax(axis=1)
    assert (predictions == labels).mean() > 0.9


def test_a_mirrored_step_runs_on_two_replicas():
    # The trainer's one strategy per device set: a second MirroredStrategy in the process would
    # reuse its collective keys.
    strategy = distribute.make_strategy(devices=("/cpu:0", "/cpu:1"))
    maps, labels = _marked_problem(examples=8)
    with strategy.scope():
        model = fbsd.build(SMALL_SHAPES, CLASSES, channels=4)
        optimizer = keras.optimizers.SGD(0.1)  # Adam's update would double the tracing time
        optimizer.build(model.trainable_variables)
    replica_step = _replica_step(model, optimizer, len(labels))

    @tf.function
    def step(batch):
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    dataset = tf.data.Dataset.from_tensor_slices((maps, labels)).batch(len(labels))
    before = np.asarray(model.trainable_variables[0])
    loss = step(next(iter(strategy.experimental_distribute_dataset(dataset))))
    assert np.isfinite(float(loss))
    assert not np.array_equal(np.asarray(model.trainable_variables[0]), before)


def test_export_archive_reloads_with_the_same_outputs(trained, tmp_path):
    model = trained[0]  # trained, so that BatchNorm's moving statistics are not the initial ones
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda maps: model(maps, training=False),
        input_signature=[fbsd.input_signature(SMALL_SHAPES)],
    )
    archive.write_out(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    maps = _maps(seed=6, shapes=SMALL_SHAPES)
    expected = _numpy(model(maps, training=False))
    served = _numpy(reloaded.serve({node: tf.constant(value) for node, value in maps.items()}))
    assert served.keys() == expected.keys()
    assert set(reloaded.signatures["serve"].structured_input_signature[1]) == set(SMALL_SHAPES)
    for name in expected:
        np.testing.assert_allclose(served[name], expected[name], rtol=1e-5, atol=1e-6)
