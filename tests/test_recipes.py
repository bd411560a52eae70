"""Training recipes: the converged stage rule, its in-stage learning-rate reductions, the thesis's
exact schedule, --refit, and the stacked combiner."""

import dataclasses
import json
import os

import conftest
import numpy as np
import pytest
import tensorflow as tf
import test_train

from pipeline.config import offline as offline_config
from pipeline.config import recipes
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.training import fusion as fusion_lib
from pipeline.training import heads
from pipeline.training import plateau
from pipeline.training import run_directory
from pipeline.training import stacking
from pipeline.training import train

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "thesis_results.json")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """One-branch records a linear head separates: 60 train, 30 validation images (3 steps an epoch
    at batch 20)."""
    directory = str(tmp_path_factory.mktemp("features"))
    values, labels = conftest.separable_features(
        {"train": 60, "validation": 30}, num_branches=1, noise=2.0
    )
    return conftest.write_feature_records(directory, values, labels), values, labels


def _converged(records: str, logdir: str, **options) -> training_config.TrainConfig:
    """The converged recipe's SGD rule (a linear head on pool would be solved otherwise)."""
    settings = dict(
        records_dir=records,
        logdir=logdir,
        recipe="converged",
        solver="sgd",
        stages=("pool",),
        batch_size=20,
        eval_every_steps=1,
        plateau_epochs=2.0,
        lr_reductions=0,
        max_epochs_per_stage=15.0,
        export=False,
        progress=False,
    )
    return training_config.TrainConfig(**{**settings, **options})


@pytest.mark.slow
def test_converged_stage_trains_while_validation_loss_falls_and_stops_after_the_patience(
    features, tmp_path
):
    records = features[0]
    patience_steps = 6  # 2 epochs of 3 steps
    # A rate at which the loss cannot move: the stage ends one patience after its start.
    still = train.train_and_evaluate(
        _converged(records, str(tmp_path / "still"), learning_rate=1e-9), announce=False
    ).stages[0]
    assert (still.ended_by, still.best_step, still.steps) == ("plateau", 0, patience_steps)
    # A rate at which the loss falls: it keeps going far past the first patience, and ends exactly
    # one patience after the last step that lowered the validation loss.
    logdir = str(tmp_path / "learning")
    learning = train.train_and_evaluate(
        _converged(records, logdir, learning_rate=1e-3), announce=False
    ).stages[0]
    assert learning.best_step > 2 * patience_steps
    assert learning.steps == min(learning.best_step + patience_steps, 45)
    losses = test_train._scalars(os.path.join(logdir, "stage0_pool", "validation"), "loss")
    assert [step for step, _ in losses] == list(range(learning.steps + 1))
    by_step = dict(losses)
    assert learning.best_loss == pytest.approx(by_step[learning.best_step], rel=1e-5)
    # No later evaluation lowered the loss by what counts as an improvement (plateau.lower_loss).
    assert not any(
        plateau.lower_loss(loss, learning.best_loss, recipes.LOSS_MIN_DELTA)
        for step, loss in losses
        if step > learning.best_step
    )


def test_a_plateau_inside_a_stage_divides_the_learning_rate_by_10(features, tmp_path):
    logdir = str(tmp_path / "run")
    stage = train.train_and_evaluate(
        _converged(features[0], logdir, learning_rate=1e-9, lr_reductions=2), announce=False
    ).stages[0]
    # Two plateaus met by dividing the rate, the third ends the stage: three patiences of 6 steps.
    assert (stage.ended_by, stage.steps) == ("plateau", 18)
    rates = dict(
        test_train._scalars(os.path.join(logdir, "stage0_pool", "validation"), "learning_rate")
    )
    assert rates[6] == pytest.approx(1e-9) and rates[7] == pytest.approx(1e-10)
    assert rates[12] == pytest.approx(1e-10) and rates[13] == pytest.approx(1e-11)
    assert [phase.learning_rate for phase in stage.phases] == pytest.approx([1e-9, 1e-10, 1e-11])


def test_thesis_recipe_reproduces_the_results_from_before_recipes(tmp_path):
    """tests/data/thesis_results.json was written by the trainer before recipes existed, on these
    records and flags; --recipe thesis must give the same stages. It runs after other trainings in
    this process: what they did (a random-weight backbone seeds Keras) must not change it."""
    weights = conftest.shared_path("weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")
    subset = conftest.imagenette_subset(tmp_path / "images", {"train": 8, "val": 2})
    records = str(tmp_path / "records")
    job.make_tfrecords(
        offline_config.ExtractConfig(
            out_dir=records,
            data_dir=subset,
            backbone="mobilenet_v2",
            weights=weights,
            nodes=("block_16_project_BN", "pool"),
            qualities=(30, 70),
            input_size=64,
            num_shards=2,
            batch_size=16,
            validation_percent=25,
            progress=False,
        )
    )
    results = train.train_and_evaluate(
        training_config.TrainConfig(
            records_dir=records,
            logdir=str(tmp_path / "run"),
            recipe="thesis",
            stages=("pool", "block_16_project_BN"),
            label_space="dataset",
            batch_size=8,
            eval_every_steps=4,
            seed=0,
            export=False,
            progress=False,
        ),
        announce=False,
    )
    golden = json.loads(open(GOLDEN).read())
    assert results.optimizer == golden["optimizer"] == "sgd"
    assert results.learning_rate_sweep.chosen == golden["learning_rate_sweep"]["chosen"]
    for stage, expected in zip(results.stages, golden["stages"], strict=True):
        assert (stage.node, stage.steps, stage.best_step, stage.ended_by) == (
            expected["node"],
            expected["steps"],
            expected["best_step"],
            expected["ended_by"],
        )
        for key in ("learning_rate", "epochs", "best_top1", "best_top5"):
            assert getattr(stage, key) == pytest.approx(expected[key], rel=1e-9)
        assert stage.best_loss == pytest.approx(expected["best_loss"], rel=1e-4)


def _head_weights(checkpoint: str) -> np.ndarray:
    reader = tf.train.load_checkpoint(checkpoint)
    return np.concatenate(
        [
            reader.get_tensor(name).ravel()
            for name, _ in sorted(tf.train.list_variables(checkpoint))
            if name.startswith("head/")
        ]
    )


@pytest.mark.slow
def test_refit_trains_on_train_and_validation_with_the_selected_schedule(features, tmp_path):
    records, values, labels = features
    poisoned_labels = {**labels, "validation": labels["validation"].copy()}
    poisoned_labels["validation"][:4] = (poisoned_labels["validation"][:4] + 1) % 3
    poisoned = conftest.write_feature_records(str(tmp_path / "poisoned"), values, poisoned_labels)
    runs = {}
    for name, source in (("clean", records), ("poisoned", poisoned)):
        runs[name] = train.train_and_evaluate(
            _converged(
                source,
                str(tmp_path / name),
                learning_rate=1e-3,
                max_epochs_per_stage=4.0,
                plateau_epochs=10.0,
                refit=True,
            ),
            announce=False,
        )
    clean, dirty = runs["clean"], runs["poisoned"]
    # Selection trains on train alone: the same model, though validation (what it is scored on)
    # differs.
    assert clean.stages[0].best_step == dirty.stages[0].best_step == 12
    np.testing.assert_array_equal(
        _head_weights(clean.stages[0].checkpoint), _head_weights(dirty.stages[0].checkpoint)
    )
    # The refit trains the selected schedule (4 epochs at the chosen rate) on train + validation:
    # 90 images, 5 steps an epoch, and it learnt the poisoned labels.
    refits = {name: run_directory.read(run.refit["logdir"]).stages[0] for name, run in runs.items()}
    assert refits["clean"].ended_by == "replay" and refits["clean"].steps == 20
    assert refits["clean"].best_top1 is None  # nothing held out: no score chooses anything
    assert not np.allclose(
        _head_weights(refits["clean"].checkpoint), _head_weights(refits["poisoned"].checkpoint)
    )
    assert os.path.isdir(os.path.join(clean.refit["logdir"], "checkpoints"))


@pytest.mark.slow
def test_the_stacked_gate_beats_equal_weights_where_one_branch_is_reliable_for_one_class():
    """Branch 0 is right (and sure) on class 0 only, otherwise sure of a wrong class; branch 1 is
    mildly right everywhere. Equal weights let branch 0's confident mistakes through; a gate that
    sees the predictions learns to trust branch 0 only when it says class 0."""
    rng = np.random.default_rng(0)
    count, classes = 600, 3
    labels = rng.integers(0, classes, count)
    sure, mild = np.full((count, classes), 0.02), np.full((count, classes), 0.3)
    branch0 = np.where(labels == 0, 0, (labels + 1) % classes)
    sure[np.arange(count), branch0] = 0.96
    mild[np.arange(count), labels] = 0.4
    log_probabilities = np.log(np.stack([sure, mild], axis=1)).astype(np.float32)
    held_out = stacking.HeldOut(
        np.zeros((count, 2, 4), np.float32),
        log_probabilities,
        labels,
        np.arange(count) % stacking.FOLDS,
        "made up",
    )
    gate = fusion_lib.combiner("gated", 2, stacked=True)
    gate(held_out.features[:1], held_out.log_probabilities[:1])
    outcome = stacking.fit(gate, held_out)
    assert outcome["kept"] == "learnt weights" and outcome["folds"] == stacking.FOLDS
    # Out of sample, on every fold left out in turn, the gate beats equal weights clearly.
    assert outcome["held_out_loss"] < 0.85 * outcome["equal_weights_held_out_loss"]

    def accuracy(weights):
        mixture = (weights[..., None] * np.exp(log_probabilities)).sum(axis=1)
        return float((mixture.argmax(axis=1) == labels).mean())

    learnt = np.asarray(gate(held_out.features, held_out.log_probabilities))
    assert accuracy(learnt) == 1.0 and accuracy(np.full((count, 2), 0.5)) < 0.7
    # The weights learnt alone (weighted) cannot tell the cases apart: whatever they keep, they do
    # no worse than equal weights out of sample.
    weights = fusion_lib.combiner("weighted", 2)
    weights(held_out.features[:1], held_out.log_probabilities[:1])
    plain = stacking.fit(weights, held_out)
    assert plain["held_out_loss"] <= plain["equal_weights_held_out_loss"]
    assert plain["held_out_loss"] > outcome["held_out_loss"]


def test_recipes_fill_what_the_flags_leave_open():
    thesis = training_config.TrainConfig(records_dir="r", logdir="l", recipe="thesis").resolved()
    assert (thesis.optimizer, thesis.learning_rate, thesis.plateau_epochs) == ("sgd", 0.01, 1.0)
    assert (thesis.max_epochs_per_stage, thesis.lr_reductions, thesis.sweep_seeds) == (20.0, 0, 1)
    converged = training_config.TrainConfig(records_dir="r", logdir="l", optimizer="sgd").resolved()
    assert (converged.recipe, converged.optimizer, converged.learning_rate) == (
        "converged",
        "sgd",
        "auto",
    )
    assert converged.lr_reductions == 2 and converged.plateau_epochs is None
    # The patience suits the data's size: 500 steps in whole epochs, between 2 and 20 epochs.
    assert [converged.patience_epochs(steps) for steps in (5, 40, 12800)] == [20.0, 13.0, 2.0]
    with pytest.raises(ValueError, match="--recipe"):
        training_config.TrainConfig(records_dir="r", logdir="l", recipe="fast")
    with pytest.raises(ValueError, match="--refit"):
        training_config.TrainConfig(records_dir="r", logdir="l", folds=5, refit=True)


def test_heads_fit_follows_the_recipe():
    values, labels = conftest.separable_features({"train": 90, "validation": 30}, num_branches=1)
    train_data = (values["train"][:, 0], labels["train"])
    validation = (values["validation"][:, 0], labels["validation"])
    outcomes = {}
    for recipe in recipes.RECIPE_NAMES:
        head = heads.build_head("linear", 3, seed=0)
        outcomes[recipe] = heads.fit(
            head, train_data, validation, recipe=recipe, batch_size=30, max_epochs=60, patience=5
        )
    assert outcomes["converged"]["recipe"] == "converged"
    assert (
        outcomes["converged"]["best_validation_loss"] < outcomes["thesis"]["best_validation_loss"]
    )
    assert dataclasses.asdict(recipes.RECIPES["thesis"])["optimizer"] == "sgd"


@pytest.mark.slow
def test_folds_choose_on_every_labelled_image_then_train_on_all_of_them(features, tmp_path):
    logdir = tmp_path / "run"
    results = train.train_and_evaluate(
        _converged(
            features[0],
            str(logdir),
            learning_rate="auto",
            sweep_learning_rates=(1e-3, 1e-9),
            folds=3,
            max_epochs_per_stage=3.0,
        ),
        announce=False,
    )
    sweep = results.learning_rate_sweep
    # The rate that learns has the lower mean loss over the three folds of all 90 images.
    assert sweep.chosen == 1e-3 and len(sweep.candidates) == 2
    assert "3-fold cross-validation over the 90 train and validation images" in sweep.chosen_by
    assert all(len(row.validation_loss_per_run) == 3 for row in sweep.candidates)
    for rate in ("0.001", "1e-09"):
        assert sorted(os.listdir(logdir / "folds" / f"lr{rate}")) == ["fold0", "fold1", "fold2"]
    # The final model replays the chosen schedule on all of them: nothing is scored on a split.
    stage = results.stages[0]
    assert stage.ended_by == "replay" and stage.best_top1 is None
    assert "3-fold" in results.selection and results.summary()


def test_held_out_images_in_two_folds_keep_equal_weights_instead_of_failing():
    """With two folds present, a fold's learner would have no rows to learn on (it leaves out its
    own fold and stops on the other)."""
    rng = np.random.default_rng(0)
    count, classes = 4, 3
    probabilities = rng.dirichlet(np.ones(classes), size=(count, 2))
    held_out = stacking.HeldOut(
        np.zeros((count, 2, 4), np.float32),
        np.log(probabilities).astype(np.float32),
        rng.integers(0, classes, count),
        np.array([0, 3, 0, 3]),
        "made up",
    )
    gate = fusion_lib.combiner("gated", 2, stacked=True)
    gate(held_out.features[:1], held_out.log_probabilities[:1])
    outcome = stacking.fit(gate, held_out)
    assert outcome["kept"].startswith("equal weights") and outcome["folds"] == 2
